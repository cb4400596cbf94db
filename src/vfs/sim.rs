//! [`SimFs`]: an in-memory [`Vfs`] that knows what a power cut would keep
//! (feature `simfs`).
//!
//! Run the real driver on it to prove that a protocol survives a power cut
//! at every operation, a killed process, an injected I/O error or a disk
//! that lies about fsync, deterministically and without root: this crate's
//! own crash tests (`tests/power_loss_never_rewinds.rs`) are built on it.
//! Like redb's in-memory backend, it is offered to users behind a feature.
//!
//! ```
//! use tsoracle_consensus::ConsensusDriver;
//! use tsoracle_driver_file::vfs::SimFs;
//! use tsoracle_driver_file::{LEADER_EPOCH, OpenOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
//! let fs = SimFs::new();
//! let driver = OpenOptions::new().vfs(fs.clone()).open_or_init("/oracle")?;
//! driver.persist_high_water(1_000, LEADER_EPOCH).await?;
//!
//! // The power goes out two operations into the next write: it fails.
//! fs.crash_at(fs.op_count() + 2);
//! assert!(driver.persist_high_water(2_000, LEADER_EPOCH).await.is_err());
//! assert!(fs.crashed());
//! drop(driver);
//!
//! // Whatever the disk kept, the high-water did not go back.
//! for image in fs.crash_images() {
//!     let disk = SimFs::from_image(&image)?;
//!     let driver = OpenOptions::new().vfs(disk).open_or_init("/oracle")?;
//!     assert!(driver.load_high_water().await? >= 1_000, "{}", image.label);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
//! # Model
//!
//! Every directory keeps two views of its entries (name → inode or
//! sub-directory): the *visible* one (the page cache: what `read`, `probe`
//! and `rename` see) and the *durable* one. A creation, rename or removal
//! changes the visible view at once and is queued as a pending directory
//! operation; [`Vfs::sync_dir`] on that directory moves every pending
//! operation into the durable view. Every inode likewise keeps its visible
//! bytes and the bytes its last [`VfsFile::sync`] made durable.
//!
//! Every call through the seam (on the `Vfs` or on a file it opened) is one
//! *operation* with a global index, starting at 0, recorded in an op log
//! ([`SimFs::op_log`]).
//!
//! - [`SimFs::crash_at`]`(n)` loses power at operation `n`: that operation
//!   and every later one fails with "simulated power loss" ([`POWER_LOSS`])
//!   and changes nothing. [`SimFs::crash_images`] then lists what the disk
//!   may hold after the power cut, and [`SimFs::from_image`] boots a fresh
//!   SimFs on one of them.
//! - [`SimFs::halt_at`]`(n)` kills the process at operation `n` instead:
//!   operations fail from there on ([`PROCESS_EXIT`]), but the page cache
//!   survives, so the next process (after [`SimFs::resume`]) sees what the
//!   dead one left.
//! - [`SimFs::fail_at`] and [`SimFs::fail_next`] make one operation return
//!   a chosen `io::Error` without crashing (the operation changes nothing).
//! - [`SimFs::hold_next_op`] parks the next operation until released, so a
//!   test can queue more requests behind a write in flight, deterministically.
//! - Locks live in an in-memory table: a second `try_lock` of a path while
//!   the first guard lives answers `Ok(None)`.
//! - Every directory has extended attributes (visible and durable, like its
//!   entries: a change is a pending operation of that directory until it is
//!   synced), unless [`SimFs::set_xattrs_supported`]`(false)` makes every
//!   attribute call answer `Unsupported`, as ramfs or vfat do.
//!
//! SimFs does not model moving a directory (an opened directory's owner
//! check always finds it intact), renames across directories, or
//! permission bits.
//!
//! # Crash images
//!
//! For data: *dropped* (every inode holds what its last fsync made durable;
//! never-synced files are empty), *kept* (everything written reached the
//! disk anyway) and *torn* (one inode with unsynced data holds a prefix of
//! its new bytes — every prefix for files up to 256 bytes, 512-byte sector
//! boundaries plus a few odd cuts for larger ones — the others dropped).
//!
//! For directories: each directory with pending operations keeps a subset
//! of them, applied in order over its durable entries. Up to four pending
//! operations, every subset; beyond that none, all, each single one, each
//! prefix (the journal order), and all but one. The image is the product of
//! both choices, walked from `/`: a directory whose own entry did not
//! survive in its parent is gone with everything in it.
//!
//! [`Durability`] can make the simulated disk lie (an fsync that makes
//! nothing durable), to prove a checker catches a protocol that relies on
//! it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::{Entry, LockGuard, Ownership, Vfs, VfsDir, VfsFile, xattrs_unsupported};
use crate::poison::lock;

/// The message of every error returned after the power cut
/// ([`SimFs::crash_at`]); its kind is [`io::ErrorKind::Other`].
pub const POWER_LOSS: &str = "simulated power loss";

/// The message of every error returned after the process died
/// ([`SimFs::halt_at`]); its kind is [`io::ErrorKind::Other`].
pub const PROCESS_EXIT: &str = "simulated process exit";

/// What one operation was, as the op log records it and as
/// [`SimFs::fail_next`] chooses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpKind {
    /// [`Vfs::probe`] or [`VfsDir::probe`].
    Probe,
    /// [`Vfs::create_dir`].
    CreateDir,
    /// [`VfsDir::try_lock_file`] (which creates the file if missing).
    TryLock,
    /// [`VfsDir::read`].
    Read,
    /// [`VfsDir::create_new`] (replace a file by a new empty one for
    /// writing).
    Create,
    /// [`VfsFile::write_all`].
    Write,
    /// [`VfsFile::sync`] (fsync of a file).
    FileSync,
    /// [`VfsDir::rename`].
    Rename,
    /// [`Vfs::sync_dir`] or [`VfsDir::sync`] (fsync of a directory).
    SyncDir,
    /// [`VfsDir::remove`].
    Remove,
    /// [`VfsDir::get_xattr`] (of the directory itself).
    GetXattr,
    /// [`VfsDir::set_xattr`].
    SetXattr,
    /// [`VfsDir::remove_xattr`].
    RemoveXattr,
}

/// One entry of the op log ([`SimFs::op_log`], [`SimFs::injected`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpRecord {
    /// The operation's global index, from 0: the `n` of
    /// [`SimFs::crash_at`], [`SimFs::halt_at`] and [`SimFs::fail_at`].
    pub index: u64,
    /// What the operation was.
    pub kind: OpKind,
    /// The absolute path it worked on (for a rename, its source; for an
    /// attribute, the directory).
    pub path: PathBuf,
}

impl OpRecord {
    /// The last component of the path (`"state.tmp"`), or `"/"`.
    pub fn name(&self) -> String {
        file_name(&self.path).unwrap_or_else(|| "/".to_owned())
    }
}

/// How honest the simulated disk is about fsync
/// ([`SimFs::with_durability`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// The default. File fsync makes the file's bytes durable; directory fsync makes the
    /// directory's entries durable. A correct protocol is safe on it.
    #[default]
    Honest,
    /// File fsync returns Ok but makes nothing durable (a disk with a
    /// volatile write cache that ignores flushes, for file data only).
    FileSyncIsNoop,
    /// Directory fsync returns Ok but makes nothing durable.
    DirSyncIsNoop,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Node {
    File(u64),
    Dir,
}

#[derive(Clone, Debug)]
enum DirOp {
    Create {
        name: String,
        node: Node,
    },
    Rename {
        from: String,
        to: String,
        node: Node,
    },
    Remove {
        name: String,
        node: Node,
    },
    /// An extended attribute of the directory itself set (`Some`) or
    /// removed (`None`).
    Xattr {
        name: String,
        value: Option<Vec<u8>>,
    },
}

/// A directory's extended attributes, by name, with their values.
pub type Xattrs = BTreeMap<String, Vec<u8>>;

impl DirOp {
    fn apply(&self, entries: &mut BTreeMap<String, Node>, xattrs: &mut Xattrs) {
        match self {
            DirOp::Xattr { name, value } => match value {
                Some(value) => {
                    xattrs.insert(name.clone(), value.clone());
                }
                None => {
                    xattrs.remove(name);
                }
            },
            DirOp::Create { name, node } => {
                entries.insert(name.clone(), node.clone());
            }
            DirOp::Rename { from, to, node } => {
                if entries.get(from) == Some(node) {
                    entries.remove(from);
                }
                entries.insert(to.clone(), node.clone());
            }
            DirOp::Remove { name, node } => {
                if entries.get(name) == Some(node) {
                    entries.remove(name);
                }
            }
        }
    }

    fn label(&self) -> String {
        match self {
            DirOp::Create { name, .. } => format!("create {name}"),
            DirOp::Rename { from, to, .. } => format!("rename {from}->{to}"),
            DirOp::Remove { name, .. } => format!("remove {name}"),
            DirOp::Xattr {
                name,
                value: Some(_),
            } => format!("set xattr {name}"),
            DirOp::Xattr { name, value: None } => format!("remove xattr {name}"),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Dir {
    visible: BTreeMap<String, Node>,
    durable: BTreeMap<String, Node>,
    visible_xattrs: Xattrs,
    durable_xattrs: Xattrs,
    pending: Vec<DirOp>,
}

#[derive(Clone, Debug, Default)]
struct Inode {
    data: Vec<u8>,
    synced: Vec<u8>,
}

#[derive(Clone, Debug)]
enum Trigger {
    At(u64),
    Next { kind: OpKind, name: Option<String> },
}

#[derive(Clone, Debug)]
struct Fault {
    trigger: Trigger,
    error: io::ErrorKind,
    /// An OS error number to inject instead (`EINVAL` = 22), when the code
    /// under test looks at `raw_os_error`.
    raw: Option<i32>,
}

#[derive(Debug)]
struct Inner {
    durability: Durability,
    ops: u64,
    crash_at: Option<u64>,
    crashed: bool,
    halt_at: Option<u64>,
    halted: bool,
    faults: Vec<Fault>,
    injected: Vec<OpRecord>,
    log: Vec<OpRecord>,
    dirs: BTreeMap<PathBuf, Dir>,
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    /// False: every extended-attribute call answers `Unsupported`.
    xattrs: bool,
}

#[derive(Debug, Default)]
struct GateState {
    armed: bool,
    reached: bool,
    released: bool,
}

#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    cond: Condvar,
}

/// A handle on [`SimFs::hold_next_op`]'s parked operation. Dropping it
/// without [`Hold::release`] leaves the hold armed (or the operation
/// parked).
#[derive(Debug)]
#[must_use = "a hold parks an operation until it is released"]
pub struct Hold {
    gate: Arc<Gate>,
}

impl Hold {
    /// Blocks until some thread's next operation is parked at the hold, or
    /// `timeout` passed; whether one was. A test passes a generous
    /// `timeout` as a deadlock guard, not a timing assumption.
    pub fn wait_reached(&self, timeout: Duration) -> bool {
        let state = lock(&self.gate.state);
        let (state, _) = self
            .gate
            .cond
            .wait_timeout_while(state, timeout, |s| !s.reached)
            .unwrap_or_else(|p| p.into_inner());
        state.reached
    }

    /// Lets the parked operation run (or disarms the hold if no operation
    /// reached it yet).
    pub fn release(self) {
        let mut state = lock(&self.gate.state);
        state.armed = false;
        state.released = true;
        self.gate.cond.notify_all();
    }
}

/// The in-memory filesystem (see [the module](self) for what it models).
/// Cheap to clone: clones share one disk, so keep a clone to inspect or
/// crash the disk a driver was opened on.
#[derive(Clone)]
pub struct SimFs {
    inner: Arc<Mutex<Inner>>,
    locks: Arc<Mutex<HashSet<PathBuf>>>,
    gate: Arc<Gate>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = lock(&self.inner);
        f.debug_struct("SimFs")
            .field("ops", &inner.ops)
            .field("crashed", &inner.crashed)
            .finish_non_exhaustive()
    }
}

fn file_name(path: &Path) -> Option<String> {
    path.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// An absolute, normalised form of `path` (`.` and `..` resolved
/// lexically; relative paths are taken from `/`).
fn norm(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let path = norm(path);
    match (path.parent(), file_name(&path)) {
        (Some(parent), Some(name)) => Ok((parent.to_path_buf(), name)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the root has no parent",
        )),
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl Default for SimFs {
    fn default() -> Self {
        Self::new()
    }
}

impl SimFs {
    /// An empty, honest disk holding only the root directory `/`.
    pub fn new() -> Self {
        Self::with_durability(Durability::Honest)
    }

    /// An empty disk with the given fsync honesty.
    pub fn with_durability(durability: Durability) -> Self {
        let mut dirs = BTreeMap::new();
        dirs.insert(PathBuf::from("/"), Dir::default());
        Self::from_parts(durability, dirs, BTreeMap::new())
    }

    fn from_parts(
        durability: Durability,
        dirs: BTreeMap<PathBuf, Dir>,
        inodes: BTreeMap<u64, Inode>,
    ) -> Self {
        let next_ino = inodes.keys().max().map_or(1, |max| max + 1);
        SimFs {
            inner: Arc::new(Mutex::new(Inner {
                durability,
                ops: 0,
                crash_at: None,
                crashed: false,
                halt_at: None,
                halted: false,
                faults: Vec::new(),
                injected: Vec::new(),
                log: Vec::new(),
                dirs,
                inodes,
                next_ino,
                xattrs: true,
            })),
            locks: Arc::new(Mutex::new(HashSet::new())),
            gate: Arc::new(Gate::default()),
        }
    }

    /// A fresh honest disk booted on `image`: everything in it is durable.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] when `image` is not a tree: a
    /// directory or file whose parent directory is not in it, a file at
    /// `/` or at a directory's path, or attributes of a directory that is
    /// not in it. Every image [`SimFs::crash_images`] returns boots.
    pub fn from_image(image: &CrashImage) -> io::Result<Self> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
        let mut dirs: BTreeMap<PathBuf, Dir> = BTreeMap::new();
        dirs.insert(PathBuf::from("/"), Dir::default());
        for dir in &image.dirs {
            dirs.insert(norm(dir), Dir::default());
        }
        let mut inodes = BTreeMap::new();
        let mut links: Vec<(PathBuf, String, Node)> = Vec::new();
        for dir in dirs.keys() {
            if let (Some(parent), Some(name)) = (dir.parent(), file_name(dir)) {
                links.push((parent.to_path_buf(), name, Node::Dir));
            }
        }
        for (ino, (path, bytes)) in (1u64..).zip(&image.files) {
            if dirs.contains_key(&norm(path)) {
                return Err(invalid(format!(
                    "the image has both a file and a directory at {}",
                    path.display()
                )));
            }
            inodes.insert(
                ino,
                Inode {
                    data: bytes.clone(),
                    synced: bytes.clone(),
                },
            );
            let (parent, name) = split(path)?;
            links.push((parent, name, Node::File(ino)));
        }
        for (parent, name, node) in links {
            let dir = dirs.get_mut(&parent).ok_or_else(|| {
                invalid(format!(
                    "the image has {} but not its directory",
                    parent.join(&name).display()
                ))
            })?;
            dir.visible.insert(name.clone(), node.clone());
            dir.durable.insert(name, node);
        }
        for (path, xattrs) in &image.xattrs {
            let dir = dirs.get_mut(&norm(path)).ok_or_else(|| {
                invalid(format!(
                    "the image has attributes of {} but not the directory",
                    path.display()
                ))
            })?;
            dir.visible_xattrs = xattrs.clone();
            dir.durable_xattrs = xattrs.clone();
        }
        Ok(Self::from_parts(Durability::Honest, dirs, inodes))
    }

    /// Loses power at operation `index`: it and every later operation fail
    /// with [`POWER_LOSS`] and change nothing. [`SimFs::crash_images`]
    /// then says what the disk may hold.
    pub fn crash_at(&self, index: u64) {
        lock(&self.inner).crash_at = Some(index);
    }

    /// Kills the process at operation `index`: it and every later operation
    /// fail with [`PROCESS_EXIT`] and change nothing, but unlike a
    /// power cut the page cache survives. [`SimFs::resume`] lets the next
    /// process in.
    pub fn halt_at(&self, index: u64) {
        lock(&self.inner).halt_at = Some(index);
    }

    /// Ends a [`SimFs::halt_at`]: operations succeed again.
    pub fn resume(&self) {
        let mut inner = lock(&self.inner);
        inner.halt_at = None;
        inner.halted = false;
    }

    /// Whether directories have extended attributes (the default) or every
    /// attribute call answers `Unsupported` (ramfs, vfat, Windows).
    pub fn set_xattrs_supported(&self, supported: bool) {
        lock(&self.inner).xattrs = supported;
    }

    /// The visible (page cache) extended attributes of directory `dir`.
    pub fn xattrs(&self, dir: &Path) -> Xattrs {
        lock(&self.inner)
            .dirs
            .get(&norm(dir))
            .map(|dir| dir.visible_xattrs.clone())
            .unwrap_or_default()
    }

    /// Sets (`Some`) or removes (`None`) an extended attribute of directory
    /// `dir`, visible and durable alike, outside the op count: a test's
    /// setup, or simulated damage.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] when there is no directory `dir`.
    pub fn put_xattr(&self, dir: &Path, name: &str, value: Option<&[u8]>) -> io::Result<()> {
        let mut inner = lock(&self.inner);
        let dir = inner.dir_mut(dir)?;
        match value {
            Some(value) => {
                dir.visible_xattrs.insert(name.to_owned(), value.to_vec());
                dir.durable_xattrs.insert(name.to_owned(), value.to_vec());
            }
            None => {
                dir.visible_xattrs.remove(name);
                dir.durable_xattrs.remove(name);
            }
        }
        Ok(())
    }

    /// Whether the power cut has happened.
    pub fn crashed(&self) -> bool {
        lock(&self.inner).crashed
    }

    /// Whether the process was killed by [`SimFs::halt_at`] (and not resumed).
    pub fn halted(&self) -> bool {
        lock(&self.inner).halted
    }

    /// Whether operations fail for good: power lost or process killed.
    pub fn is_down(&self) -> bool {
        let inner = lock(&self.inner);
        inner.crashed || inner.halted
    }

    /// Operations performed so far (the next operation's index).
    pub fn op_count(&self) -> u64 {
        lock(&self.inner).ops
    }

    /// Every operation performed so far, in order.
    pub fn op_log(&self) -> Vec<OpRecord> {
        lock(&self.inner).log.clone()
    }

    /// The operations that returned an injected fault.
    pub fn injected(&self) -> Vec<OpRecord> {
        lock(&self.inner).injected.clone()
    }

    /// Makes operation `index` return an error of `kind` (and do nothing).
    pub fn fail_at(&self, index: u64, kind: io::ErrorKind) {
        lock(&self.inner).faults.push(Fault {
            trigger: Trigger::At(index),
            error: kind,
            raw: None,
        });
    }

    /// Makes the next operation of `op` (on a path whose last component is
    /// `name`, when given) return an error of `kind` and do nothing. Faults
    /// queue: each fires once, the first armed that matches first.
    pub fn fail_next(&self, op: OpKind, name: Option<&str>, kind: io::ErrorKind) {
        lock(&self.inner).faults.push(Fault {
            trigger: Trigger::Next {
                kind: op,
                name: name.map(str::to_owned),
            },
            error: kind,
            raw: None,
        });
    }

    /// Like [`SimFs::fail_next`], with the OS error number `errno` (as
    /// `io::Error::from_raw_os_error` makes it).
    pub fn fail_next_os(&self, op: OpKind, name: Option<&str>, errno: i32) {
        lock(&self.inner).faults.push(Fault {
            trigger: Trigger::Next {
                kind: op,
                name: name.map(str::to_owned),
            },
            error: io::Error::from_raw_os_error(errno).kind(),
            raw: Some(errno),
        });
    }

    /// Faults armed with [`SimFs::fail_at`], [`SimFs::fail_next`] or
    /// [`SimFs::fail_next_os`] that have not fired yet.
    pub fn pending_faults(&self) -> usize {
        lock(&self.inner).faults.len()
    }

    /// Parks the next operation, whichever thread makes it, until
    /// [`Hold::release`]. Parking happens before the operation is counted.
    pub fn hold_next_op(&self) -> Hold {
        let mut state = lock(&self.gate.state);
        *state = GateState {
            armed: true,
            reached: false,
            released: false,
        };
        Hold {
            gate: Arc::clone(&self.gate),
        }
    }

    /// Every regular file of the visible view (the page cache), by path.
    pub fn visible_files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let inner = lock(&self.inner);
        let mut out = BTreeMap::new();
        for (dir_path, dir) in &inner.dirs {
            for (name, node) in &dir.visible {
                if let Some(inode) = inner.file(node) {
                    out.insert(dir_path.join(name), inode.data.clone());
                }
            }
        }
        out
    }

    /// Creates directory `path` and its missing parents, visible and
    /// durable alike, outside the op count: a test's setup.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::AlreadyExists`] when a file is where `path` or one
    /// of its parents would be; nothing was created.
    pub fn put_dir(&self, path: &Path) -> io::Result<()> {
        let mut inner = lock(&self.inner);
        let path = norm(path);
        let mut missing: Vec<PathBuf> = path
            .ancestors()
            .filter(|dir| !inner.dirs.contains_key(*dir))
            .map(Path::to_path_buf)
            .collect();
        missing.reverse();
        for dir in &missing {
            if let Some(Node::File(_)) = inner.lookup(dir)? {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} is a file", dir.display()),
                ));
            }
        }
        for dir in missing {
            let (parent, name) = split(&dir)?;
            let parent = inner.dir_mut(&parent)?;
            parent.visible.insert(name.clone(), Node::Dir);
            parent.durable.insert(name, Node::Dir);
            inner.dirs.insert(dir, Dir::default());
        }
        Ok(())
    }

    /// Replaces a file's bytes, visible and durable alike, outside the op
    /// count (creating the file if missing): simulated media damage, or a
    /// test's setup.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] when its directory does not exist;
    /// [`io::ErrorKind::IsADirectory`] when `path` is a directory;
    /// [`io::ErrorKind::InvalidInput`] for `/`.
    pub fn put_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut inner = lock(&self.inner);
        let (parent, name) = split(path)?;
        let existing = inner.dir_mut(&parent)?.visible.get(&name).cloned();
        let ino = match existing {
            Some(Node::File(ino)) => ino,
            Some(Node::Dir) => {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    format!("{} is a directory", path.display()),
                ));
            }
            None => {
                let ino = inner.next_ino;
                inner.next_ino += 1;
                let dir = inner.dir_mut(&parent)?;
                dir.visible.insert(name.clone(), Node::File(ino));
                dir.durable.insert(name, Node::File(ino));
                ino
            }
        };
        inner.inodes.insert(
            ino,
            Inode {
                data: bytes.to_vec(),
                synced: bytes.to_vec(),
            },
        );
        Ok(())
    }

    /// Runs the bookkeeping of one operation: hold, count, log, crash and
    /// fault checks. On `Ok` the caller performs the operation under the
    /// returned lock.
    fn begin(&self, kind: OpKind, path: &Path) -> io::Result<MutexGuard<'_, Inner>> {
        {
            let mut state = lock(&self.gate.state);
            if state.armed {
                state.armed = false;
                state.reached = true;
                self.gate.cond.notify_all();
                let _state = self
                    .gate
                    .cond
                    .wait_while(state, |s| !s.released)
                    .unwrap_or_else(|p| p.into_inner());
            }
        }
        let mut inner = lock(&self.inner);
        let index = inner.ops;
        inner.ops += 1;
        let record = OpRecord {
            index,
            kind,
            path: norm(path),
        };
        inner.log.push(record.clone());
        if inner.crashed || inner.crash_at == Some(index) {
            inner.crashed = true;
            return Err(io::Error::other(POWER_LOSS));
        }
        if inner.halted || inner.halt_at == Some(index) {
            inner.halted = true;
            return Err(io::Error::other(PROCESS_EXIT));
        }
        let name = file_name(&record.path);
        let hit = inner.faults.iter().position(|fault| match &fault.trigger {
            Trigger::At(at) => *at == index,
            Trigger::Next { kind: k, name: n } => {
                *k == kind && n.as_ref().is_none_or(|n| Some(n) == name.as_ref())
            }
        });
        if let Some(position) = hit {
            let fault = inner.faults.remove(position);
            inner.injected.push(record.clone());
            if let Some(raw) = fault.raw {
                return Err(io::Error::from_raw_os_error(raw));
            }
            return Err(io::Error::new(
                fault.error,
                format!(
                    "injected {:?} at op {index} ({kind:?} {})",
                    fault.error,
                    record.path.display()
                ),
            ));
        }
        Ok(inner)
    }

    /// Everything the disk may hold after the power cut (or right now, if
    /// power were cut now), deduplicated by content.
    pub fn crash_images(&self) -> Vec<CrashImage> {
        let inner = lock(&self.inner);

        // Directory choices: for each directory with pending operations, a
        // list of (label, which pending ops survive).
        let mut per_dir: Vec<(PathBuf, Vec<Survivors>)> = Vec::new();
        for (path, dir) in &inner.dirs {
            if dir.pending.is_empty() {
                continue;
            }
            let labels: Vec<String> = dir.pending.iter().map(DirOp::label).collect();
            per_dir.push((path.clone(), subsets(&labels)));
        }
        let mut dir_choices: Vec<(String, BTreeMap<PathBuf, Vec<bool>>)> =
            vec![(String::new(), BTreeMap::new())];
        for (path, choices) in &per_dir {
            let mut next = Vec::new();
            for (label, chosen) in &dir_choices {
                for (sub_label, mask) in choices {
                    let mut chosen = chosen.clone();
                    chosen.insert(path.clone(), mask.clone());
                    next.push((format!("{label}[{}: {sub_label}]", path.display()), chosen));
                }
            }
            dir_choices = next;
        }

        // Data choices.
        let dirty = inner
            .inodes
            .iter()
            .filter(|(_, inode)| inode.data != inode.synced);
        let mut data_choices: Vec<(String, DataChoice)> = vec![
            ("unsynced dropped".to_owned(), DataChoice::Dropped),
            ("unsynced kept".to_owned(), DataChoice::Kept),
        ];
        for (&ino, inode) in dirty {
            let len = inode.data.len();
            for cut in cut_points(len) {
                data_choices.push((
                    format!("inode {ino} torn at {cut}/{len}"),
                    DataChoice::Torn { ino, cut },
                ));
            }
        }

        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (dir_label, masks) in &dir_choices {
            for (data_label, data) in &data_choices {
                let image = inner.build_image(masks, data);
                if seen.insert((
                    image.dirs.clone(),
                    image.files.clone(),
                    image.xattrs.clone(),
                )) {
                    out.push(CrashImage {
                        label: format!("{data_label} {dir_label}"),
                        ..image
                    });
                }
            }
        }
        out
    }
}

#[derive(Clone, Copy, Debug)]
enum DataChoice {
    Dropped,
    Kept,
    Torn { ino: u64, cut: usize },
}

/// Where a torn write may stop: every strict prefix of a small file;
/// sector boundaries and a few odd cuts of a large one.
fn cut_points(len: usize) -> Vec<usize> {
    if len <= 256 {
        return (0..len).collect();
    }
    let mut cuts: BTreeSet<usize> = (0..len).step_by(512).collect();
    cuts.extend([1, len / 2, len - 1]);
    cuts.into_iter().collect()
}

/// A label and, per pending operation of one directory, whether it survives.
type Survivors = (String, Vec<bool>);

/// Which pending operations of one directory survive, with a label.
fn subsets(labels: &[String]) -> Vec<Survivors> {
    let n = labels.len();
    let describe = |mask: &[bool]| -> String {
        let kept: Vec<&str> = labels
            .iter()
            .zip(mask)
            .filter(|(_, keep)| **keep)
            .map(|(label, _)| label.as_str())
            .collect();
        if kept.is_empty() {
            "none kept".to_owned()
        } else {
            format!("kept {}", kept.join(", "))
        }
    };
    let mut masks: Vec<Vec<bool>> = Vec::new();
    if n <= 4 {
        for bits in 0u32..(1 << n) {
            masks.push((0..n).map(|i| bits & (1 << i) != 0).collect());
        }
    } else {
        masks.push(vec![false; n]);
        masks.push(vec![true; n]);
        for i in 0..n {
            masks.push((0..n).map(|j| j == i).collect());
            masks.push((0..n).map(|j| j < i).collect());
            masks.push((0..n).map(|j| j != i).collect());
        }
        masks.sort();
        masks.dedup();
    }
    masks
        .into_iter()
        .map(|mask| (describe(&mask), mask))
        .collect()
}

impl Inner {
    fn build_image(&self, masks: &BTreeMap<PathBuf, Vec<bool>>, data: &DataChoice) -> CrashImage {
        let mut image = CrashImage {
            label: String::new(),
            dirs: BTreeSet::new(),
            files: BTreeMap::new(),
            xattrs: BTreeMap::new(),
        };
        let mut stack = vec![PathBuf::from("/")];
        while let Some(path) = stack.pop() {
            let Some(dir) = self.dirs.get(&path) else {
                continue;
            };
            image.dirs.insert(path.clone());
            let mut entries = dir.durable.clone();
            let mut xattrs = dir.durable_xattrs.clone();
            if let Some(mask) = masks.get(&path) {
                for (op, keep) in dir.pending.iter().zip(mask) {
                    if *keep {
                        op.apply(&mut entries, &mut xattrs);
                    }
                }
            }
            if !xattrs.is_empty() {
                image.xattrs.insert(path.clone(), xattrs);
            }
            for (name, node) in entries {
                let child = path.join(&name);
                match node {
                    Node::Dir => stack.push(child),
                    Node::File(ino) => {
                        // Every file entry has its inode; inodes are never
                        // removed.
                        let Some(inode) = self.inodes.get(&ino) else {
                            continue;
                        };
                        let bytes = match *data {
                            DataChoice::Dropped => inode.synced.clone(),
                            DataChoice::Kept => inode.data.clone(),
                            DataChoice::Torn { ino: torn, cut } if torn == ino => {
                                inode.data.iter().take(cut).copied().collect()
                            }
                            DataChoice::Torn { .. } => inode.synced.clone(),
                        };
                        image.files.insert(child, bytes);
                    }
                }
            }
        }
        image
    }

    /// The directory whose extended attributes a call works on, or
    /// `Unsupported` when the disk has none.
    fn xattr_dir(&mut self, path: &Path) -> io::Result<&mut Dir> {
        if !self.xattrs {
            return Err(xattrs_unsupported());
        }
        self.dir_mut(path)
    }

    /// The inode of a file entry; `None` for a directory.
    fn file(&self, node: &Node) -> Option<&Inode> {
        match node {
            Node::File(ino) => self.inodes.get(ino),
            Node::Dir => None,
        }
    }

    fn dir_mut(&mut self, path: &Path) -> io::Result<&mut Dir> {
        self.dirs
            .get_mut(&norm(path))
            .ok_or_else(|| not_found(path))
    }

    fn lookup(&self, path: &Path) -> io::Result<Option<Node>> {
        let path = norm(path);
        if path == Path::new("/") {
            return Ok(Some(Node::Dir));
        }
        let (parent, name) = split(&path)?;
        match self.dirs.get(&parent) {
            Some(dir) => Ok(dir.visible.get(&name).cloned()),
            None => Ok(None),
        }
    }

    /// Creates a file entry (and inode) in the visible view.
    fn create_file(&mut self, path: &Path) -> io::Result<u64> {
        let (parent, name) = split(path)?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, Inode::default());
        let dir = self.dir_mut(&parent)?;
        dir.visible.insert(name.clone(), Node::File(ino));
        dir.pending.push(DirOp::Create {
            name,
            node: Node::File(ino),
        });
        Ok(ino)
    }
}

/// One possible content of the disk after a power cut, from
/// [`SimFs::crash_images`]; [`SimFs::from_image`] boots a disk on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrashImage {
    /// Which data and directory variant produced it (`"unsynced dropped
    /// [/oracle: kept rename state.tmp->state]"`): for a failure message.
    pub label: String,
    /// Every directory that exists, `/` included, by absolute path.
    pub dirs: BTreeSet<PathBuf>,
    /// Every regular file, by path, with its bytes.
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    /// The extended attributes of every directory that has any.
    pub xattrs: BTreeMap<PathBuf, Xattrs>,
}

struct SimFile {
    fs: SimFs,
    ino: u64,
    path: PathBuf,
}

impl VfsFile for SimFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut inner = self.fs.begin(OpKind::Write, &self.path)?;
        let inode = inner
            .inodes
            .get_mut(&self.ino)
            .ok_or_else(|| not_found(&self.path))?;
        inode.data.extend_from_slice(bytes);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut inner = self.fs.begin(OpKind::FileSync, &self.path)?;
        let honest = inner.durability != Durability::FileSyncIsNoop;
        let inode = inner
            .inodes
            .get_mut(&self.ino)
            .ok_or_else(|| not_found(&self.path))?;
        if honest {
            inode.synced = inode.data.clone();
        }
        Ok(())
    }
}

struct HeldLock {
    table: Arc<Mutex<HashSet<PathBuf>>>,
    path: PathBuf,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        lock(&self.table).remove(&self.path);
    }
}

// The path-level operations, which `Vfs` and `SimDir` both use.
impl SimFs {
    fn probe_path(&self, path: &Path) -> io::Result<Entry> {
        let inner = self.begin(OpKind::Probe, path)?;
        Ok(match inner.lookup(path)? {
            None => Entry::Missing,
            Some(Node::Dir) => Entry::Directory,
            Some(Node::File(_)) => Entry::Other,
        })
    }

    fn create_dir_path(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.begin(OpKind::CreateDir, path)?;
        if inner.lookup(path)?.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        let (parent, name) = split(path)?;
        let dir = inner.dir_mut(&parent)?;
        dir.visible.insert(name.clone(), Node::Dir);
        dir.pending.push(DirOp::Create {
            name,
            node: Node::Dir,
        });
        inner.dirs.insert(norm(path), Dir::default());
        Ok(())
    }

    fn try_lock_path(&self, path: &Path) -> io::Result<Option<LockGuard>> {
        let mut inner = self.begin(OpKind::TryLock, path)?;
        match inner.lookup(path)? {
            Some(Node::File(_)) => {}
            Some(Node::Dir) => {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    format!("{} is a directory", path.display()),
                ));
            }
            None => {
                inner.create_file(path)?;
            }
        }
        drop(inner);
        let path = norm(path);
        let mut table = lock(&self.locks);
        if !table.insert(path.clone()) {
            return Ok(None);
        }
        Ok(Some(LockGuard::new(HeldLock {
            table: Arc::clone(&self.locks),
            path,
        })))
    }

    fn read_path(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let inner = self.begin(OpKind::Read, path)?;
        match inner.lookup(path)? {
            None => Ok(None),
            Some(Node::Dir) => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", path.display()),
            )),
            Some(node) => Ok(inner.file(&node).map(|inode| inode.data.clone())),
        }
    }

    fn create_path(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let mut inner = self.begin(OpKind::Create, path)?;
        let ino = match inner.lookup(path)? {
            Some(Node::File(old)) => {
                // What the driver does: unlink whatever is there, then
                // create a new inode exclusively. One operation here, as a
                // crash between the two leaves the same debris-free state
                // as a crash before the create.
                let (parent, name) = split(path)?;
                let dir = inner.dir_mut(&parent)?;
                dir.visible.remove(&name);
                dir.pending.push(DirOp::Remove {
                    name,
                    node: Node::File(old),
                });
                inner.create_file(path)?
            }
            Some(Node::Dir) => {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    format!("{} is a directory", path.display()),
                ));
            }
            None => inner.create_file(path)?,
        };
        Ok(Box::new(SimFile {
            fs: self.clone(),
            ino,
            path: norm(path),
        }))
    }

    fn rename_path(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut inner = self.begin(OpKind::Rename, from)?;
        let (from_dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        if from_dir != to_dir {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "SimFs renames only within one directory",
            ));
        }
        let dir = inner.dir_mut(&from_dir)?;
        let node = dir
            .visible
            .get(&from_name)
            .cloned()
            .ok_or_else(|| not_found(from))?;
        if node == Node::Dir {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "SimFs does not rename directories",
            ));
        }
        dir.visible.remove(&from_name);
        dir.visible.insert(to_name.clone(), node.clone());
        dir.pending.push(DirOp::Rename {
            from: from_name,
            to: to_name,
            node,
        });
        Ok(())
    }

    fn sync_dir_path(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.begin(OpKind::SyncDir, path)?;
        let honest = inner.durability != Durability::DirSyncIsNoop;
        let dir = inner.dir_mut(path)?;
        if honest {
            for op in std::mem::take(&mut dir.pending) {
                op.apply(&mut dir.durable, &mut dir.durable_xattrs);
            }
        }
        Ok(())
    }

    fn remove_path(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.begin(OpKind::Remove, path)?;
        let (parent, name) = split(path)?;
        let dir = inner.dir_mut(&parent)?;
        match dir.visible.get(&name).cloned() {
            None => Err(not_found(path)),
            Some(Node::Dir) => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", path.display()),
            )),
            Some(node) => {
                dir.visible.remove(&name);
                dir.pending.push(DirOp::Remove { name, node });
                Ok(())
            }
        }
    }
}

/// An opened directory of a [`SimFs`]: its path, and the disk. SimFs does
/// not model moving a directory, so the owner check always finds it intact.
#[derive(Debug)]
struct SimDir {
    fs: SimFs,
    path: PathBuf,
}

impl SimDir {
    fn at(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Vfs for SimFs {
    fn probe(&self, path: &Path) -> io::Result<Entry> {
        self.probe_path(path)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        self.create_dir_path(path)
    }

    fn resolve(&self, path: &Path) -> io::Result<PathBuf> {
        Ok(norm(path))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.sync_dir_path(path)
    }

    fn open_dir(&self, path: &Path) -> io::Result<Box<dyn VfsDir>> {
        Ok(Box::new(SimDir {
            fs: self.clone(),
            path: norm(path),
        }))
    }
}

impl VfsDir for SimDir {
    fn mode(&self) -> io::Result<Option<u32>> {
        Ok(None)
    }

    fn try_lock_dir(&self) -> io::Result<Option<LockGuard>> {
        // The directory's own lock lives in the same table under a name no
        // file can have.
        let key = self.path.join("\0directory-lock");
        let mut table = lock(&self.fs.locks);
        if !table.insert(key.clone()) {
            return Ok(None);
        }
        Ok(Some(LockGuard::new(HeldLock {
            table: Arc::clone(&self.fs.locks),
            path: key,
        })))
    }

    fn try_lock_file(&self, name: &str) -> io::Result<Option<LockGuard>> {
        self.fs.try_lock_path(&self.at(name))
    }

    fn probe(&self, name: &str) -> io::Result<Entry> {
        self.fs.probe_path(&self.at(name))
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        self.fs.read_path(&self.at(name))
    }

    fn create_new(&self, name: &str) -> io::Result<Box<dyn VfsFile>> {
        self.fs.create_path(&self.at(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.fs.rename_path(&self.at(from), &self.at(to))
    }

    fn sync(&self) -> io::Result<()> {
        self.fs.sync_dir_path(&self.path)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.fs.remove_path(&self.at(name))
    }

    fn check_owner(&self, _path: &Path, _lock_name: &str) -> io::Result<Ownership> {
        Ok(Ownership::Intact)
    }

    fn check_lock(&self, _lock_name: &str) -> io::Result<Ownership> {
        Ok(Ownership::Intact)
    }

    fn get_xattr(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        let mut inner = self.fs.begin(OpKind::GetXattr, &self.path)?;
        let dir = inner.xattr_dir(&self.path)?;
        Ok(dir.visible_xattrs.get(name).cloned())
    }

    fn set_xattr(&self, name: &str, value: &[u8]) -> io::Result<()> {
        let mut inner = self.fs.begin(OpKind::SetXattr, &self.path)?;
        let dir = inner.xattr_dir(&self.path)?;
        dir.visible_xattrs.insert(name.to_owned(), value.to_vec());
        dir.pending.push(DirOp::Xattr {
            name: name.to_owned(),
            value: Some(value.to_vec()),
        });
        Ok(())
    }

    fn remove_xattr(&self, name: &str) -> io::Result<()> {
        let mut inner = self.fs.begin(OpKind::RemoveXattr, &self.path)?;
        let dir = inner.xattr_dir(&self.path)?;
        if dir.visible_xattrs.remove(name).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no extended attribute {name}"),
            ));
        }
        dir.pending.push(DirOp::Xattr {
            name: name.to_owned(),
            value: None,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_that_is_not_a_tree_is_refused() {
        let mut image = CrashImage::default();
        image.files.insert(PathBuf::from("/oracle/state"), vec![1]);
        let err = SimFs::from_image(&image).expect_err("no /oracle");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        image.dirs.insert(PathBuf::from("/oracle"));
        let fs = SimFs::from_image(&image).expect("a tree boots");
        assert_eq!(fs.visible_files(), image.files);
        image.files.insert(PathBuf::from("/oracle"), Vec::new());
        let err = SimFs::from_image(&image).expect_err("a file at a directory");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn setup_calls_answer_errors_on_bad_paths() {
        let fs = SimFs::new();
        let missing = fs.put_file(Path::new("/nowhere/state"), b"x");
        assert_eq!(missing.map_err(|e| e.kind()), Err(io::ErrorKind::NotFound));
        fs.put_dir(Path::new("/a/b")).expect("parents made");
        let on_dir = fs.put_file(Path::new("/a/b"), b"x");
        assert_eq!(
            on_dir.map_err(|e| e.kind()),
            Err(io::ErrorKind::IsADirectory)
        );
        fs.put_file(Path::new("/a/f"), b"x").expect("a file");
        let under_file = fs.put_dir(Path::new("/a/f/c"));
        assert_eq!(
            under_file.map_err(|e| e.kind()),
            Err(io::ErrorKind::AlreadyExists)
        );
        let no_dir = fs.put_xattr(Path::new("/z"), "user.x", Some(b"1"));
        assert_eq!(no_dir.map_err(|e| e.kind()), Err(io::ErrorKind::NotFound));
        assert_eq!(fs.op_count(), 0, "setup is outside the op count");
    }

    #[test]
    fn a_hold_nobody_reaches_times_out() {
        let fs = SimFs::new();
        let hold = fs.hold_next_op();
        assert!(!hold.wait_reached(Duration::from_millis(10)));
        hold.release();
        assert_eq!(fs.probe(Path::new("/")).ok(), Some(Entry::Directory));
    }
}
