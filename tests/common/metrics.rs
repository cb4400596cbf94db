//! A driver measured by its own in-memory recorder, and what it recorded:
//! the metrics tests' instruments (only with the `metrics` feature).

use std::collections::HashMap;
use std::sync::Arc;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use tsoracle_driver_file::FileDriver;
use tsoracle_driver_file::metrics as names;

/// A driver opened under its own recorder.
pub fn open_measured(dir: &std::path::Path) -> (Arc<FileDriver>, Snapshotter) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let driver = metrics::with_local_recorder(&recorder, || FileDriver::open_or_init(dir))
        .expect("open the state directory");
    (driver, snapshotter)
}

/// What was recorded since the previous snapshot: the debugging recorder
/// resets counters and gauges to 0 and drains histograms as it reads them,
/// so counters read as increments, and a gauge as the value last `set`
/// since the previous snapshot (0 if none).
pub struct Recorded(pub HashMap<CompositeKey, DebugValue>);

impl Recorded {
    pub fn take(snapshotter: &Snapshotter) -> Self {
        Recorded(
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _, _, value)| (key, value))
                .collect(),
        )
    }

    pub fn find(&self, kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> &DebugValue {
        self.0
            .iter()
            .find(|(key, _)| {
                let key_labels: Vec<(&str, &str)> = key
                    .key()
                    .labels()
                    .map(|label| (label.key(), label.value()))
                    .collect();
                key.kind() == kind
                    && key.key().name() == name
                    && key_labels.len() == labels.len()
                    && labels.iter().all(|label| key_labels.contains(label))
            })
            .map(|(_, value)| value)
            .unwrap_or_else(|| panic!("{kind:?} {name} {labels:?} was not registered"))
    }

    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.find(MetricKind::Counter, name, labels) {
            DebugValue::Counter(value) => *value,
            other => panic!("{name} is not a counter: {other:?}"),
        }
    }

    pub fn gauge(&self, name: &str) -> f64 {
        match self.find(MetricKind::Gauge, name, &[]) {
            DebugValue::Gauge(value) => value.into_inner(),
            other => panic!("{name} is not a gauge: {other:?}"),
        }
    }

    pub fn histogram(&self, name: &str) -> Vec<f64> {
        match self.find(MetricKind::Histogram, name, &[]) {
            DebugValue::Histogram(values) => values.iter().map(|v| v.into_inner()).collect(),
            other => panic!("{name} is not a histogram: {other:?}"),
        }
    }

    pub fn write_errors(&self, op: &str, effect: &str) -> u64 {
        self.counter(names::WRITE_ERRORS_TOTAL, &[("op", op), ("effect", effect)])
    }

    pub fn all_write_errors(&self) -> u64 {
        let mut total = 0;
        for op in ["write_temp", "fsync_temp", "rename", "fsync_dir"] {
            for effect in ["transient", "poisoning"] {
                total += self.write_errors(op, effect);
            }
        }
        total
    }
}
