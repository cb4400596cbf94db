//! Framing shared by the record files: the magic and version header, a
//! bounds-checked little-endian reader and the CRC-32C trailer. Pure: no
//! I/O.

use super::RecordError;

/// Length of the CRC-32C trailer every record file ends with.
pub(crate) const CRC_LEN: usize = 4;

/// Appends the CRC-32C of everything already in `buf`, little-endian.
pub(crate) fn push_crc(buf: &mut Vec<u8>) {
    let crc = crc32c::crc32c(buf);
    buf.extend_from_slice(&crc.to_le_bytes());
}

/// Checks the magic and version at the head of `bytes`, as far as they are
/// present: a short file that already shows the wrong magic or version is
/// reported by what it is rather than by its length.
pub(crate) fn check_header(bytes: &[u8], magic: [u8; 4], version: u8) -> Result<(), RecordError> {
    if let Some(found) = bytes.get(..4)
        && found != magic
    {
        return Err(RecordError::BadMagic {
            expected: magic,
            found: [found[0], found[1], found[2], found[3]],
        });
    }
    if let Some(&found) = bytes.get(4)
        && found != version
    {
        return Err(RecordError::UnsupportedVersion {
            found,
            supported: version,
        });
    }
    Ok(())
}

/// Checks the header (see [`check_header`]), that `bytes` holds at least
/// `min_len` bytes, then the CRC-32C trailer, and returns the bytes the CRC
/// covers. `min_len` must be at least the header plus [`CRC_LEN`].
pub(crate) fn check_frame(
    bytes: &[u8],
    magic: [u8; 4],
    version: u8,
    min_len: usize,
) -> Result<&[u8], RecordError> {
    debug_assert!(min_len >= 5 + CRC_LEN);
    check_header(bytes, magic, version)?;
    if bytes.len() < min_len {
        return Err(RecordError::TooShort {
            len: bytes.len(),
            min: min_len,
        });
    }
    let (covered, trailer) = bytes.split_at(bytes.len() - CRC_LEN);
    let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let computed = crc32c::crc32c(covered);
    if stored != computed {
        return Err(RecordError::CrcMismatch { stored, computed });
    }
    Ok(covered)
}

/// [`check_frame`] for a record of exactly `len` bytes: a foreign or
/// newer file is still reported by its magic or version first, then a
/// longer one as [`RecordError::TooLong`].
pub(crate) fn check_fixed_frame(
    bytes: &[u8],
    magic: [u8; 4],
    version: u8,
    len: usize,
) -> Result<&[u8], RecordError> {
    check_header(bytes, magic, version)?;
    if bytes.len() > len {
        return Err(RecordError::TooLong {
            len: bytes.len(),
            expected: len,
        });
    }
    check_frame(bytes, magic, version, len)
}

/// A forward-only reader over a CRC-checked body. Every read names the field
/// it wanted, so a short body reports exactly what was missing.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading `bytes` at offset `pos`.
    pub(crate) fn new(bytes: &'a [u8], pos: usize) -> Self {
        Self { bytes, pos }
    }

    /// The next `len` bytes, or [`RecordError::Truncated`] naming `field`.
    pub(crate) fn take(
        &mut self,
        len: usize,
        field: &'static str,
    ) -> Result<&'a [u8], RecordError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len());
        match end {
            Some(end) => {
                let out = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(out)
            }
            None => Err(RecordError::Truncated {
                field,
                offset: self.pos,
            }),
        }
    }

    /// The next fixed-size array, for the integer readers below.
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, RecordError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, RecordError> {
        self.array(field).map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, RecordError> {
        self.array(field).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, RecordError> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// Fails with [`RecordError::TrailingBytes`] unless every byte was read.
    pub(crate) fn finish(self) -> Result<(), RecordError> {
        match self.bytes.len() - self.pos {
            0 => Ok(()),
            count => Err(RecordError::TrailingBytes {
                offset: self.pos,
                count,
            }),
        }
    }
}
