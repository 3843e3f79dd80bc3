//! Accepted records held column by column until their segment is converted: a row is
//! appended where its message is decoded ([`View`]), its strings copied once into each
//! column's one buffer, and the writer turns a block into an Arrow batch by copying those
//! buffers. Records as [`Record`](pyusage_record::Record)s cost about thirty allocations
//! each, made on the ingest thread and freed on the writer's, and a pass over every record per
//! column to build the batch.
//!
//! The columns are the dataset schema's ([`arrow_schema`]); the batch equals what Arrow's JSON
//! decoder makes of the records' JSON (the writer's test checks, odd values included).
use std::sync::Arc;

use arrow_array::{
    types::{ArrowPrimitiveType, Int32Type, TimestampMicrosecondType, UInt32Type, UInt64Type},
    ArrayRef, BooleanArray, ListArray, PrimitiveArray, RecordBatch, StringArray, StructArray,
};
use arrow_buffer::{BooleanBuffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{ArrowError, DataType};
use pyusage_record::{arrow_schema, columns as c};

use crate::view::View;

/// Rows per block: each block becomes one Arrow batch, whose column-by-column passes stay in
/// cache.
pub const ROWS: usize = 8192;

/// The validity of a nullable column.
#[derive(Debug, Default)]
struct Validity {
    valid: Vec<bool>,
    nulls: usize,
}

impl Validity {
    fn push(&mut self, v: bool) {
        self.valid.push(v);
        self.nulls += !v as usize;
    }

    fn truncate(&mut self, n: usize) {
        if n < self.valid.len() {
            self.nulls -= self.valid[n..].iter().filter(|v| !**v).count();
            self.valid.truncate(n);
        }
    }

    fn buffer(&self) -> Option<NullBuffer> {
        (self.nulls > 0).then(|| NullBuffer::from(self.valid.as_slice()))
    }
}

/// A `Utf8` column.
#[derive(Debug)]
struct Strs {
    /// One more than the values: starts at `[0]`.
    offsets: Vec<i32>,
    data: Vec<u8>,
    /// Empty for a column that is never null ([`Strs::push_str`]).
    validity: Validity,
}

impl Default for Strs {
    fn default() -> Self {
        Strs {
            offsets: vec![0],
            data: Vec::new(),
            validity: Validity::default(),
        }
    }
}

impl Strs {
    fn push(&mut self, v: Option<&str>) {
        self.push_str(v.unwrap_or_default());
        self.validity.push(v.is_some());
    }

    /// A value of a column that is never null (no validity kept).
    fn push_str(&mut self, s: &str) {
        self.data.extend_from_slice(s.as_bytes());
        self.offsets.push(self.data.len() as i32);
    }

    fn truncate(&mut self, n: usize) {
        if n + 1 < self.offsets.len() {
            self.offsets.truncate(n + 1);
            self.data.truncate(self.offsets[n] as usize);
            self.validity.truncate(n);
        }
    }

    fn offsets(&self) -> OffsetBuffer<i32> {
        OffsetBuffer::new(ScalarBuffer::from(self.offsets.clone()))
    }

    fn array(&self) -> Result<StringArray, ArrowError> {
        StringArray::try_new(
            self.offsets(),
            self.data.as_slice().into(),
            self.validity.buffer(),
        )
    }
}

/// A primitive column.
#[derive(Debug)]
struct Prim<T: ArrowPrimitiveType> {
    values: Vec<T::Native>,
    validity: Validity,
}

impl<T: ArrowPrimitiveType> Default for Prim<T> {
    fn default() -> Self {
        Prim {
            values: Vec::new(),
            validity: Validity::default(),
        }
    }
}

impl<T: ArrowPrimitiveType> Prim<T> {
    fn push(&mut self, v: Option<T::Native>) {
        self.values.push(v.unwrap_or_default());
        self.validity.push(v.is_some());
    }

    /// A value of a column that is never null (no validity kept).
    fn push_value(&mut self, v: T::Native) {
        self.values.push(v);
    }

    fn truncate(&mut self, n: usize) {
        self.values.truncate(n);
        self.validity.truncate(n);
    }

    fn array(&self) -> PrimitiveArray<T> {
        PrimitiveArray::new(
            ScalarBuffer::from(self.values.clone()),
            self.validity.buffer(),
        )
    }
}

/// Columns of the dataset schema, in its order.
#[derive(Debug, Default)]
pub struct Block {
    rows: usize,
    record_id: Strs,
    seq: Prim<UInt64Type>,
    source: Strs,
    /// `sources`: list offsets over the values.
    sources_offsets: Vec<i32>,
    sources: Strs,
    host: Strs,
    system: Strs,
    subsystem: Strs,
    is_compute: Vec<bool>,
    pid: Prim<Int32Type>,
    ppid: Prim<Int32Type>,
    root_pid: Prim<Int32Type>,
    process_start: Prim<TimestampMicrosecondType>,
    process_end: Prim<TimestampMicrosecondType>,
    exit: Strs,
    exit_code: Prim<Int32Type>,
    exit_signal: Strs,
    executable: Strs,
    python_version: Strs,
    main: Strs,
    uid: Prim<UInt32Type>,
    username: Strs,
    is_staff: Vec<bool>,
    in_container: Vec<bool>,
    container_runtime: Strs,
    blas: Strs,
    job_id: Strs,
    step_id: Strs,
    job_source: Strs,
    rank: Prim<Int32Type>,
    n_ranks: Prim<UInt32Type>,
    num_nodes: Prim<UInt32Type>,
    qos: Strs,
    account: Strs,
    partition: Strs,
    package: Strs,
    distribution: Strs,
    version: Strs,
    env_kind: Strs,
    env_prefix: Strs,
    first_path: Strs,
    n_files: Prim<UInt32Type>,
    first_seen: Prim<TimestampMicrosecondType>,
    cpu_user_us: Prim<UInt64Type>,
    cpu_sys_us: Prim<UInt64Type>,
    cpu_sampling: Strs,
    cpu_sample_hz: Prim<UInt32Type>,
    cpu_samples_total: Prim<UInt64Type>,
    cpu_samples_self: Prim<UInt64Type>,
    cpu_samples_inclusive: Prim<UInt64Type>,
    /// `cpu_samples_callers`: list offsets over the entries' two columns.
    callers_offsets: Vec<i32>,
    caller_package: Strs,
    caller_samples: Prim<UInt64Type>,
}

/// Calls `$f!(column)` for every string and primitive column of a [`Block`].
macro_rules! each_column {
    ($b:expr, $f:ident) => {{
        let b = $b;
        $f!(b.record_id);
        $f!(b.seq);
        $f!(b.source);
        $f!(b.host);
        $f!(b.system);
        $f!(b.subsystem);
        $f!(b.pid);
        $f!(b.ppid);
        $f!(b.root_pid);
        $f!(b.process_start);
        $f!(b.process_end);
        $f!(b.exit);
        $f!(b.exit_code);
        $f!(b.exit_signal);
        $f!(b.executable);
        $f!(b.python_version);
        $f!(b.main);
        $f!(b.uid);
        $f!(b.username);
        $f!(b.container_runtime);
        $f!(b.blas);
        $f!(b.job_id);
        $f!(b.step_id);
        $f!(b.job_source);
        $f!(b.rank);
        $f!(b.n_ranks);
        $f!(b.num_nodes);
        $f!(b.qos);
        $f!(b.account);
        $f!(b.partition);
        $f!(b.package);
        $f!(b.distribution);
        $f!(b.version);
        $f!(b.env_kind);
        $f!(b.env_prefix);
        $f!(b.first_path);
        $f!(b.n_files);
        $f!(b.first_seen);
        $f!(b.cpu_user_us);
        $f!(b.cpu_sys_us);
        $f!(b.cpu_sampling);
        $f!(b.cpu_sample_hz);
        $f!(b.cpu_samples_total);
        $f!(b.cpu_samples_self);
        $f!(b.cpu_samples_inclusive);
    }};
}

impl Block {
    /// Rows held.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends a row.
    pub fn push(&mut self, v: &View) {
        let b = self;
        b.rows += 1;
        b.record_id.push_str(v.record_id);
        b.seq.push_value(v.seq);
        b.source.push_str(v.source.as_str());
        if b.sources_offsets.is_empty() {
            b.sources_offsets.push(0);
        }
        for s in v.sources.as_slice() {
            b.sources.push_str(s.as_str());
        }
        let n = b.sources.offsets.len().saturating_sub(1) as i32;
        b.sources_offsets.push(n);
        b.host.push_str(v.host);
        b.system.push(v.system);
        b.subsystem.push(v.subsystem);
        b.is_compute.push(v.is_compute);
        b.pid.push_value(v.pid);
        b.ppid.push_value(v.ppid);
        b.root_pid.push_value(v.root_pid);
        b.process_start.push_value(v.process_start);
        b.process_end.push(v.process_end);
        b.exit.push_str(v.exit.as_str());
        b.exit_code.push(v.exit_code);
        b.exit_signal.push(v.exit_signal);
        b.executable.push_str(v.executable);
        b.python_version.push(v.python_version);
        b.main.push(v.main);
        b.uid.push_value(v.uid);
        b.username.push(v.username);
        b.is_staff.push(v.is_staff);
        b.in_container.push(v.in_container);
        b.container_runtime.push(v.container_runtime);
        b.blas.push(v.blas);
        b.job_id.push(v.job_id);
        b.step_id.push(v.step_id);
        b.job_source.push(v.job_source.map(|j| j.as_str()));
        b.rank.push(v.rank);
        b.n_ranks.push(v.n_ranks);
        b.num_nodes.push_value(v.num_nodes);
        b.qos.push(v.qos);
        b.account.push(v.account);
        b.partition.push(v.partition);
        b.package.push_str(v.package);
        b.distribution.push(v.distribution);
        b.version.push(v.version);
        b.env_kind.push_str(v.env_kind.as_str());
        b.env_prefix.push(v.env_prefix);
        b.first_path.push_str(v.first_path);
        b.n_files.push_value(v.n_files);
        b.first_seen.push_value(v.first_seen);
        b.cpu_user_us.push(v.cpu_user_us);
        b.cpu_sys_us.push(v.cpu_sys_us);
        b.cpu_sampling.push(v.cpu_sampling);
        b.cpu_sample_hz.push(v.cpu_sample_hz);
        b.cpu_samples_total.push(v.cpu_samples_total);
        b.cpu_samples_self.push(v.cpu_samples_self);
        b.cpu_samples_inclusive.push(v.cpu_samples_inclusive);
        if b.callers_offsets.is_empty() {
            b.callers_offsets.push(0);
        }
        for c in v.cpu_samples_callers.iter() {
            b.caller_package.push_str(c.package);
            b.caller_samples.push_value(c.samples);
        }
        b.callers_offsets.push(b.caller_samples.values.len() as i32);
    }

    /// Keeps the first `n` rows.
    pub fn truncate(&mut self, n: usize) {
        if n >= self.rows {
            return;
        }
        macro_rules! cut {
            ($c:expr) => {
                $c.truncate(n)
            };
        }
        each_column!(&mut *self, cut);
        if n + 1 < self.sources_offsets.len() {
            self.sources_offsets.truncate(n + 1);
            let values = self.sources_offsets[n] as usize;
            self.sources.truncate(values);
        }
        if n + 1 < self.callers_offsets.len() {
            self.callers_offsets.truncate(n + 1);
            let values = self.callers_offsets[n] as usize;
            self.caller_package.truncate(values);
            self.caller_samples.truncate(values);
        }
        self.is_compute.truncate(n);
        self.is_staff.truncate(n);
        self.in_container.truncate(n);
        self.rows = n;
    }

    /// Empties it, keeping its memory.
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// The rows as one Arrow batch of the dataset schema (the buffers copied).
    pub fn batch(&self) -> Result<RecordBatch, ArrowError> {
        let schema = arrow_schema();
        let cols = schema
            .fields()
            .iter()
            .map(|f| self.column(f.name(), f.data_type()))
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(schema, cols)
    }

    fn column(&self, name: &str, ty: &DataType) -> Result<ArrayRef, ArrowError> {
        fn bools(v: &[bool]) -> ArrayRef {
            Arc::new(BooleanArray::new(BooleanBuffer::from(v), None))
        }
        fn time(p: &Prim<TimestampMicrosecondType>) -> ArrayRef {
            Arc::new(p.array().with_timezone("+00:00"))
        }
        let text = |s: &Strs| -> Result<ArrayRef, ArrowError> { Ok(Arc::new(s.array()?)) };
        Ok(match name {
            c::RECORD_ID => text(&self.record_id)?,
            c::SEQ => Arc::new(self.seq.array()),
            c::SOURCE => text(&self.source)?,
            c::SOURCES => {
                let DataType::List(item) = ty else {
                    return Err(ArrowError::SchemaError(format!("{name} is not a list")));
                };
                Arc::new(ListArray::try_new(
                    item.clone(),
                    list_offsets(&self.sources_offsets),
                    Arc::new(self.sources.array()?),
                    None,
                )?)
            }
            c::HOST => text(&self.host)?,
            c::SYSTEM => text(&self.system)?,
            c::SUBSYSTEM => text(&self.subsystem)?,
            c::IS_COMPUTE => bools(&self.is_compute),
            c::PID => Arc::new(self.pid.array()),
            c::PPID => Arc::new(self.ppid.array()),
            c::ROOT_PID => Arc::new(self.root_pid.array()),
            c::PROCESS_START => time(&self.process_start),
            c::PROCESS_END => time(&self.process_end),
            c::EXIT => text(&self.exit)?,
            c::EXIT_CODE => Arc::new(self.exit_code.array()),
            c::EXIT_SIGNAL => text(&self.exit_signal)?,
            c::EXECUTABLE => text(&self.executable)?,
            c::PYTHON_VERSION => text(&self.python_version)?,
            c::MAIN => text(&self.main)?,
            c::UID => Arc::new(self.uid.array()),
            c::USERNAME => text(&self.username)?,
            c::IS_STAFF => bools(&self.is_staff),
            c::IN_CONTAINER => bools(&self.in_container),
            c::CONTAINER_RUNTIME => text(&self.container_runtime)?,
            c::BLAS => text(&self.blas)?,
            c::JOB_ID => text(&self.job_id)?,
            c::STEP_ID => text(&self.step_id)?,
            c::JOB_SOURCE => text(&self.job_source)?,
            c::RANK => Arc::new(self.rank.array()),
            c::N_RANKS => Arc::new(self.n_ranks.array()),
            c::NUM_NODES => Arc::new(self.num_nodes.array()),
            c::QOS => text(&self.qos)?,
            c::ACCOUNT => text(&self.account)?,
            c::PARTITION => text(&self.partition)?,
            c::PACKAGE => text(&self.package)?,
            c::DISTRIBUTION => text(&self.distribution)?,
            c::VERSION => text(&self.version)?,
            c::ENV_KIND => text(&self.env_kind)?,
            c::ENV_PREFIX => text(&self.env_prefix)?,
            c::FIRST_PATH => text(&self.first_path)?,
            c::N_FILES => Arc::new(self.n_files.array()),
            c::FIRST_SEEN => time(&self.first_seen),
            c::CPU_USER_US => Arc::new(self.cpu_user_us.array()),
            c::CPU_SYS_US => Arc::new(self.cpu_sys_us.array()),
            c::CPU_SAMPLING => text(&self.cpu_sampling)?,
            c::CPU_SAMPLE_HZ => Arc::new(self.cpu_sample_hz.array()),
            c::CPU_SAMPLES_TOTAL => Arc::new(self.cpu_samples_total.array()),
            c::CPU_SAMPLES_SELF => Arc::new(self.cpu_samples_self.array()),
            c::CPU_SAMPLES_INCLUSIVE => Arc::new(self.cpu_samples_inclusive.array()),
            c::CPU_SAMPLES_CALLERS => {
                let DataType::List(item) = ty else {
                    return Err(ArrowError::SchemaError(format!("{name} is not a list")));
                };
                let DataType::Struct(fields) = item.data_type() else {
                    return Err(ArrowError::SchemaError(format!("{name} is not of structs")));
                };
                let entries = StructArray::try_new(
                    fields.clone(),
                    vec![
                        Arc::new(self.caller_package.array()?),
                        Arc::new(self.caller_samples.array()),
                    ],
                    None,
                )?;
                Arc::new(ListArray::try_new(
                    item.clone(),
                    list_offsets(&self.callers_offsets),
                    Arc::new(entries),
                    None,
                )?)
            }
            other => {
                return Err(ArrowError::SchemaError(format!(
                    "the record has no column {other}"
                )))
            }
        })
    }
}

/// A list column's offsets (none before the first row).
fn list_offsets(o: &[i32]) -> OffsetBuffer<i32> {
    if o.is_empty() {
        OffsetBuffer::new_empty()
    } else {
        OffsetBuffer::new(ScalarBuffer::from(o.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyusage_record::{dataset::batch_of, Record};

    #[test]
    fn a_block_is_the_batch_of_its_records_and_truncates() {
        let mut recs = Record::odd_examples();
        let mut many = Record::example();
        many.sources = vec![pyusage_record::Source::Preload; 6];
        recs.push(many);
        // Callers: many, none, a few (a record's: any number).
        for n in [12, 0, 3] {
            let mut r = Record::odd_examples()[0].clone();
            r.cpu_samples_callers = (0..n)
                .map(|i| pyusage_record::CallerSamples {
                    package: format!("p{i}"),
                    samples: i as u64,
                })
                .collect();
            recs.push(r);
        }
        let mut b = Block::default();
        for r in &recs {
            b.push(&View::of(r));
        }
        let refs: Vec<&Record> = recs.iter().collect();
        assert_eq!(b.batch().unwrap(), batch_of(&refs).unwrap());
        for n in (0..recs.len()).rev() {
            b.truncate(n);
            assert_eq!(b.rows(), n);
            assert_eq!(
                b.batch().unwrap(),
                batch_of(&refs[..n]).unwrap(),
                "{n} rows"
            );
        }
        // Refilled after a clear: the same again.
        b.push(&View::of(&recs[0]));
        b.clear();
        for r in &recs {
            b.push(&View::of(r));
        }
        assert_eq!(b.batch().unwrap(), batch_of(&refs).unwrap());
    }
}
