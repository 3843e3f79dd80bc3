//! Column names of the record, as constants: the one list that the Arrow schema, the JSON
//! form, the syslog structured data, `pyusage show` and the analysis's scan and filter all
//! use, so a renamed field cannot leave a reader behind (`lib.rs` tests that [`ALL`] is the
//! schema, and each crate tests that its own lists are subsets of it).

/// `record_id`.
pub const RECORD_ID: &str = "record_id";
/// `seq`.
pub const SEQ: &str = "seq";
/// `source`.
pub const SOURCE: &str = "source";
/// `sources`.
pub const SOURCES: &str = "sources";
/// `host`.
pub const HOST: &str = "host";
/// `system`.
pub const SYSTEM: &str = "system";
/// `subsystem`.
pub const SUBSYSTEM: &str = "subsystem";
/// `is_compute`.
pub const IS_COMPUTE: &str = "is_compute";
/// `pid`.
pub const PID: &str = "pid";
/// `ppid`.
pub const PPID: &str = "ppid";
/// `root_pid`.
pub const ROOT_PID: &str = "root_pid";
/// `process_start`.
pub const PROCESS_START: &str = "process_start";
/// `process_end`.
pub const PROCESS_END: &str = "process_end";
/// `exit`.
pub const EXIT: &str = "exit";
/// `exit_code`.
pub const EXIT_CODE: &str = "exit_code";
/// `exit_signal`.
pub const EXIT_SIGNAL: &str = "exit_signal";
/// `executable`.
pub const EXECUTABLE: &str = "executable";
/// `python_version`.
pub const PYTHON_VERSION: &str = "python_version";
/// `main`.
pub const MAIN: &str = "main";
/// `uid`.
pub const UID: &str = "uid";
/// `username`.
pub const USERNAME: &str = "username";
/// `is_staff`.
pub const IS_STAFF: &str = "is_staff";
/// `in_container`.
pub const IN_CONTAINER: &str = "in_container";
/// `container_runtime`.
pub const CONTAINER_RUNTIME: &str = "container_runtime";
/// `blas`.
pub const BLAS: &str = "blas";
/// `job_id`.
pub const JOB_ID: &str = "job_id";
/// `step_id`.
pub const STEP_ID: &str = "step_id";
/// `job_source`.
pub const JOB_SOURCE: &str = "job_source";
/// `rank`.
pub const RANK: &str = "rank";
/// `n_ranks`.
pub const N_RANKS: &str = "n_ranks";
/// `num_nodes`.
pub const NUM_NODES: &str = "num_nodes";
/// `qos`.
pub const QOS: &str = "qos";
/// `account`.
pub const ACCOUNT: &str = "account";
/// `partition`.
pub const PARTITION: &str = "partition";
/// `package`.
pub const PACKAGE: &str = "package";
/// `distribution`.
pub const DISTRIBUTION: &str = "distribution";
/// `version`.
pub const VERSION: &str = "version";
/// `env_kind`.
pub const ENV_KIND: &str = "env_kind";
/// `env_prefix`.
pub const ENV_PREFIX: &str = "env_prefix";
/// `first_path`.
pub const FIRST_PATH: &str = "first_path";
/// `n_files`.
pub const N_FILES: &str = "n_files";
/// `first_seen`.
pub const FIRST_SEEN: &str = "first_seen";

/// `cpu_user_us`.
pub const CPU_USER_US: &str = "cpu_user_us";
/// `cpu_sys_us`.
pub const CPU_SYS_US: &str = "cpu_sys_us";
/// `cpu_sampling`.
pub const CPU_SAMPLING: &str = "cpu_sampling";
/// `cpu_sample_hz`.
pub const CPU_SAMPLE_HZ: &str = "cpu_sample_hz";
/// `cpu_samples_total`.
pub const CPU_SAMPLES_TOTAL: &str = "cpu_samples_total";
/// `cpu_samples_self`.
pub const CPU_SAMPLES_SELF: &str = "cpu_samples_self";
/// `cpu_samples_inclusive`.
pub const CPU_SAMPLES_INCLUSIVE: &str = "cpu_samples_inclusive";
/// `cpu_samples_callers`.
pub const CPU_SAMPLES_CALLERS: &str = "cpu_samples_callers";

/// Every column, in schema order.
pub const ALL: [&str; 50] = [
    RECORD_ID,
    SEQ,
    SOURCE,
    SOURCES,
    HOST,
    SYSTEM,
    SUBSYSTEM,
    IS_COMPUTE,
    PID,
    PPID,
    ROOT_PID,
    PROCESS_START,
    PROCESS_END,
    EXIT,
    EXIT_CODE,
    EXIT_SIGNAL,
    EXECUTABLE,
    PYTHON_VERSION,
    MAIN,
    UID,
    USERNAME,
    IS_STAFF,
    IN_CONTAINER,
    CONTAINER_RUNTIME,
    BLAS,
    JOB_ID,
    STEP_ID,
    JOB_SOURCE,
    RANK,
    N_RANKS,
    NUM_NODES,
    QOS,
    ACCOUNT,
    PARTITION,
    PACKAGE,
    DISTRIBUTION,
    VERSION,
    ENV_KIND,
    ENV_PREFIX,
    FIRST_PATH,
    N_FILES,
    FIRST_SEEN,
    CPU_USER_US,
    CPU_SYS_US,
    CPU_SAMPLING,
    CPU_SAMPLE_HZ,
    CPU_SAMPLES_TOTAL,
    CPU_SAMPLES_SELF,
    CPU_SAMPLES_INCLUSIVE,
    CPU_SAMPLES_CALLERS,
];

/// Whether every name in `names` is a column: for the lists other crates keep (which columns
/// to scan, filter on, print), tested against this one.
pub fn all_known<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), &'a str> {
    names
        .into_iter()
        .try_for_each(|n| if ALL.contains(&n) { Ok(()) } else { Err(n) })
}
