//! The store against real files in temporary directories: crashes are simulated by damaging files
//! the way a crash or a bad disk would, then opening the directory again.

use std::fs::OpenOptions;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::checkpoint::{
    LockStatus, OperatorState, RecoveryPreview, SNAPSHOT_FORMAT_VERSION, SnapshotStatus, inspect,
};
use crate::plan::OffsetRange;

type TestResult = anyhow::Result<()>;

fn identity() -> PipelineIdentity {
    PipelineIdentity::new("orders", ["orders"], "sqlite://orders.db table=orders")
        .with_operator("counts", 1)
}

fn tp(p: i32) -> TopicPartition {
    TopicPartition::new("orders", p)
}

fn t(i: i64) -> BatchTime {
    BatchTime::from_millis(i * 100)
}

/// Batch `i` reads offsets `[10(i-1), 10i)` of partitions 0 and 1.
fn plan(i: i64) -> BatchPlan {
    let ranges = (0..2)
        .map(|p| OffsetRange::new(tp(p), (i - 1) * 10, i * 10))
        .collect();
    BatchPlan::new(t(i), ranges)
}

/// The snapshot after batch `i`, with a state that says which batch it is.
fn snapshot(i: i64) -> Snapshot {
    let positions = (0..2).map(|p| (tp(p), i * 10)).collect();
    let mut snapshot = Snapshot::initial(identity(), Duration::from_millis(100), t(i), positions);
    snapshot.operator_state.insert(
        "counts".into(),
        OperatorState {
            schema_version: 1,
            bytes: i.to_le_bytes().to_vec(),
        },
    );
    snapshot
}

/// A fresh store with the initial snapshot at batch 0 and plans `1..=plans` logged.
/// [`CheckpointStore::open`], waiting out a lock that a dropped store of this process still
/// holds for a moment: a test that spawns `mount` forks, and until the child execs it shares
/// every open file description, the LOCK file's flock included.
fn open(dir: &Path) -> Result<CheckpointStore> {
    let mut tries = 0;
    loop {
        match CheckpointStore::open(dir) {
            Err(Error::CheckpointLocked { .. }) if tries < 200 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            opened => return opened,
        }
    }
}

fn started(dir: &Path, plans: i64) -> Result<CheckpointStore> {
    let mut store = open(dir)?;
    assert_eq!(store.recover(&identity())?, Recovery::Fresh);
    store.write_snapshot(&snapshot(0))?;
    for i in 1..=plans {
        store.append_plan(&plan(i))?;
    }
    Ok(store)
}

/// [`started`] with `plans` logged, then a snapshot after batch 2.
fn snapshotted_at_2(dir: &Path, plans: i64) -> Result<CheckpointStore> {
    let mut store = started(dir, plans)?;
    store.write_snapshot(&snapshot(2))?;
    Ok(store)
}

fn recover(dir: &Path) -> Result<Recovery> {
    open(dir)?.recover(&identity())
}

fn resumed(snapshot_at: i64, plans: impl IntoIterator<Item = i64>) -> Recovery {
    Recovery::Resume {
        snapshot: snapshot(snapshot_at),
        plans: plans.into_iter().map(plan).collect(),
    }
}

fn truncate_by(path: &Path, bytes: u64) -> std::io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    let len = file.metadata()?.len();
    file.set_len(len - bytes)
}

fn flip_byte(path: &Path, from_end: usize) -> std::io::Result<()> {
    let mut bytes = fs::read(path)?;
    let i = bytes.len() - from_end;
    bytes[i] ^= 0xff;
    fs::write(path, bytes)
}

fn names(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    Ok(names)
}

fn checkpoint_message(result: Result<Recovery>) -> String {
    match result {
        Err(Error::Checkpoint { path, message }) => format!("{}: {message}", path.display()),
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

#[test]
fn store_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<CheckpointStore>();
    assert_send::<Recovery>();
}

#[test]
fn round_trip() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = snapshotted_at_2(dir.path(), 3)?;
    store.append_plan(&plan(4))?;
    assert_eq!(store.logged_plans(), &[plan(3), plan(4)]);
    assert_eq!(store.positions().and_then(|p| p.get(&tp(0))), Some(&40));
    drop(store);

    let mut store = open(dir.path())?;
    assert_eq!(store.recover(&identity())?, resumed(2, 3..=4));
    assert_eq!(store.snapshot_time(), Some(t(2)));
    assert_eq!(store.last_batch_time(), Some(t(4)));
    store.append_plan(&plan(5))?;
    drop(store);
    assert_eq!(recover(dir.path())?, resumed(2, 3..=5));
    Ok(())
}

#[test]
fn empty_directory_is_fresh_and_is_created() -> TestResult {
    let parent = tempfile::tempdir()?;
    let dir = parent.path().join("a/b");
    assert_eq!(recover(&dir)?, Recovery::Fresh);
    assert_eq!(names(&dir)?, ["LOCK"]);
    Ok(())
}

#[test]
fn torn_newest_snapshot_falls_back_to_the_previous_one() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = snapshotted_at_2(dir.path(), 2)?;
    store.append_plan(&plan(3))?;
    drop(store);
    truncate_by(&files::snapshot_path(dir.path(), t(2)), 5)?;

    // The plans come from the old snapshot's log and from the damaged one's.
    assert_eq!(recover(dir.path())?, resumed(0, 1..=3));
    Ok(())
}

#[test]
fn snapshot_with_bad_crc_is_skipped() -> TestResult {
    let dir = tempfile::tempdir()?;
    drop(snapshotted_at_2(dir.path(), 2)?);
    flip_byte(&files::snapshot_path(dir.path(), t(2)), 1)?;

    let inspection = inspect(dir.path())?;
    assert_eq!(
        inspection.snapshots[0].status,
        SnapshotStatus::Invalid("the payload checksum does not match".into())
    );
    assert_eq!(recover(dir.path())?, resumed(0, 1..=2));
    Ok(())
}

#[test]
fn snapshot_from_a_newer_weir_stops_recovery() -> TestResult {
    let dir = tempfile::tempdir()?;
    drop(snapshotted_at_2(dir.path(), 2)?);
    let path = files::snapshot_path(dir.path(), t(2));
    let mut bytes = fs::read(&path)?;
    bytes[8..10].copy_from_slice(&(SNAPSHOT_FORMAT_VERSION + 1).to_le_bytes());
    fs::write(&path, bytes)?;

    let message = checkpoint_message(recover(dir.path()));
    assert!(message.contains("snapshot-200.ckpt"), "{message}");
    assert!(message.contains("Upgrade weir"), "{message}");
    Ok(())
}

#[test]
fn torn_last_plan_record_is_dropped_and_cut_off() -> TestResult {
    let dir = tempfile::tempdir()?;
    drop(started(dir.path(), 3)?);
    let log = files::plan_log_path(dir.path(), t(0));
    truncate_by(&log, 3)?;
    let torn_len = fs::metadata(&log)?.len();

    let mut store = open(dir.path())?;
    assert_eq!(store.recover(&identity())?, resumed(0, 1..=2));
    assert!(
        fs::metadata(&log)?.len() < torn_len,
        "the torn record is cut off"
    );
    // Batch 3 never ran, so it is planned again; appending after the cut is clean.
    store.append_plan(&plan(3))?;
    drop(store);
    assert_eq!(recover(dir.path())?, resumed(0, 1..=3));
    Ok(())
}

#[test]
fn corrupt_plan_record_in_the_middle_is_an_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    drop(started(dir.path(), 3)?);
    let log = files::plan_log_path(dir.path(), t(0));
    let mut bytes = fs::read(&log)?;
    let first_len = usize::try_from(u32::from_le_bytes([
        bytes[10], bytes[11], bytes[12], bytes[13],
    ]))?;
    let second_record = 10 + 8 + first_len;
    bytes[second_record + 9] ^= 0xff;
    fs::write(&log, bytes)?;

    let message = checkpoint_message(recover(dir.path()));
    assert!(message.contains("plans-0.log"), "{message}");
    assert!(
        message.contains(&format!("corrupt at byte offset {second_record}")),
        "{message}"
    );
    Ok(())
}

#[test]
fn second_open_of_a_held_directory_fails_fast() -> TestResult {
    let dir = tempfile::tempdir()?;
    assert_eq!(inspect(dir.path())?.lock, LockStatus::NoLockFile);
    let store = CheckpointStore::open(dir.path())?;
    // Two File handles in one process conflict: flock locks belong to the open file description.
    let second = CheckpointStore::open(dir.path());
    assert!(
        matches!(second, Err(Error::CheckpointLocked { .. })),
        "{second:?}"
    );
    let holder = Some(std::process::id());
    assert_eq!(inspect(dir.path())?.lock, LockStatus::Held { pid: holder });
    drop(store);
    assert_eq!(inspect(dir.path())?.lock, LockStatus::Free);
    open(dir.path())?;
    Ok(())
}

#[test]
fn files_without_a_valid_snapshot_are_an_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    drop(started(dir.path(), 1)?);
    fs::remove_file(files::snapshot_path(dir.path(), t(0)))?;
    let message = checkpoint_message(recover(dir.path()));
    assert!(
        message.contains("holds files but no valid snapshot"),
        "{message}"
    );
    assert!(message.contains("plans-0.log"), "{message}");

    let other = tempfile::tempdir()?;
    fs::write(other.path().join("notes.txt"), "mine")?;
    let message = checkpoint_message(recover(other.path()));
    assert!(message.contains("notes.txt"), "{message}");
    Ok(())
}

#[test]
fn a_crash_before_the_first_snapshot_is_renamed_leaves_a_fresh_directory() -> TestResult {
    let dir = tempfile::tempdir()?;
    // The first snapshot's plan log is created before the snapshot; a crash came between.
    PlanLogWriter::create(&files::plan_log_path(dir.path(), t(0)), &[])?;
    let mut store = open(dir.path())?;
    assert_eq!(store.recover(&identity())?, Recovery::Fresh);
    assert_eq!(names(dir.path())?, ["LOCK"]);
    store.write_snapshot(&snapshot(3))?;
    store.append_plan(&plan(4))?;
    drop(store);
    assert_eq!(recover(dir.path())?, resumed(3, [4]));
    Ok(())
}

#[test]
fn missing_plan_log_of_the_snapshot_is_an_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    drop(started(dir.path(), 1)?);
    fs::remove_file(files::plan_log_path(dir.path(), t(0)))?;
    let message = checkpoint_message(recover(dir.path()));
    assert!(message.contains("plans-0.log is missing"), "{message}");
    Ok(())
}

#[test]
fn only_damaged_snapshots_are_an_error_that_says_why() -> TestResult {
    let dir = tempfile::tempdir()?;
    drop(started(dir.path(), 0)?);
    truncate_by(&files::snapshot_path(dir.path(), t(0)), 1)?;
    let message = checkpoint_message(recover(dir.path()));
    assert!(
        message.contains("snapshot-0.ckpt: the header announces"),
        "{message}"
    );
    Ok(())
}

#[test]
fn fingerprint_mismatch_names_the_changes() -> TestResult {
    let dir = tempfile::tempdir()?;
    drop(started(dir.path(), 1)?);
    let changed = PipelineIdentity::new(
        "orders",
        ["orders", "returns"],
        "sqlite://orders.db table=orders",
    )
    .with_operator("counts", 2);
    let result = open(dir.path())?.recover(&changed);
    match result {
        Err(Error::FingerprintMismatch { changes, .. }) => assert_eq!(
            changes,
            "topics: [orders] -> [orders, returns]; operator \"counts\" state schema 1 -> 2"
        ),
        other => panic!("expected a fingerprint mismatch, got {other:?}"),
    }
    Ok(())
}

#[test]
fn the_newest_snapshots_and_their_logs_are_kept() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store =
        started(dir.path(), 6)?.with_keep_snapshots(NonZeroUsize::MIN.saturating_add(1));
    for i in 1..=5 {
        store.write_snapshot(&snapshot(i))?;
    }
    assert_eq!(
        names(dir.path())?,
        [
            "LOCK",
            "plans-400.log",
            "plans-500.log",
            "snapshot-400.ckpt",
            "snapshot-500.ckpt"
        ]
    );
    drop(store);
    // The oldest kept snapshot can still be recovered from.
    fs::remove_file(files::snapshot_path(dir.path(), t(5)))?;
    assert_eq!(recover(dir.path())?, resumed(4, 5..=6));
    Ok(())
}

#[test]
fn snapshot_carries_later_plans_into_its_log() -> TestResult {
    let dir = tempfile::tempdir()?;
    // Batch 3 and 4 were planned before the snapshot of batch 2 was taken.
    drop(snapshotted_at_2(dir.path(), 4)?);
    fs::remove_file(files::plan_log_path(dir.path(), t(0)))?;
    assert_eq!(recover(dir.path())?, resumed(2, 3..=4));
    Ok(())
}

#[test]
fn temporary_files_are_removed_at_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    drop(started(dir.path(), 1)?);
    fs::write(dir.path().join("snapshot-100.ckpt.tmp"), "half")?;
    fs::write(dir.path().join("keep.tmp"), "not ours")?;
    assert_eq!(inspect(dir.path())?.temp_files.len(), 1);
    drop(open(dir.path())?);
    assert_eq!(
        names(dir.path())?,
        ["LOCK", "keep.tmp", "plans-0.log", "snapshot-0.ckpt"]
    );
    Ok(())
}

#[test]
fn plans_that_do_not_follow_on_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = started(dir.path(), 2)?;
    let again = store.append_plan(&plan(2));
    assert!(matches!(again, Err(Error::Contiguity { .. })), "{again:?}");
    let mut gap = plan(3);
    gap.ranges[1].from += 1;
    let gap = store.append_plan(&gap);
    let message = gap.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("orders/1 starts at 21 but the previous batch ended at 20"),
        "{message}"
    );
    store.append_plan(&plan(3))?;
    Ok(())
}

#[test]
fn snapshot_positions_must_match_the_logged_plans() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = started(dir.path(), 2)?;
    let mut wrong = snapshot(2);
    wrong.positions.insert(tp(1), 19);
    let result = store.write_snapshot(&wrong);
    assert!(
        matches!(result, Err(Error::Contiguity { .. })),
        "{result:?}"
    );
    let older = store.write_snapshot(&snapshot(0));
    assert!(
        older.is_ok(),
        "a snapshot at the current time is allowed: {older:?}"
    );
    Ok(())
}

#[test]
fn failed_snapshot_at_the_current_time_does_not_strand_later_plans() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = started(dir.path(), 2)?;
    // The snapshot's temporary file cannot be created, after its new plan log replaced the old one.
    fs::create_dir(dir.path().join("snapshot-0.ckpt.tmp"))?;
    assert!(store.write_snapshot(&snapshot(0)).is_err());
    fs::remove_dir(dir.path().join("snapshot-0.ckpt.tmp"))?;
    store.append_plan(&plan(3))?;
    drop(store);
    assert_eq!(recover(dir.path())?, resumed(0, 1..=3));
    Ok(())
}

#[test]
fn failed_initial_snapshot_leaves_the_directory_empty() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = open(dir.path())?;
    assert_eq!(store.recover(&identity())?, Recovery::Fresh);
    let obstacle = dir.path().join("snapshot-0.ckpt.tmp");
    fs::create_dir(&obstacle)?;
    assert!(store.write_snapshot(&snapshot(0)).is_err());
    // A plan log without a snapshot would stop every later start.
    assert_eq!(names(dir.path())?, ["LOCK", "snapshot-0.ckpt.tmp"]);
    fs::remove_dir(&obstacle)?;
    drop(store);
    let mut store = open(dir.path())?;
    assert_eq!(store.recover(&identity())?, Recovery::Fresh);
    store.write_snapshot(&snapshot(0))?;
    store.append_plan(&plan(1))?;
    drop(store);
    assert_eq!(recover(dir.path())?, resumed(0, [1]));
    Ok(())
}

/// A tmpfs mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` where mounting is not permitted (not root, or no `CAP_SYS_ADMIN`).
    fn mount(size_kib: u32) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_kib}k"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        mounted.then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(self.dir.path())
            .status();
    }
}

const PAGE: usize = 4096;

/// Appends pages to `path` until the file system is full.
fn fill(path: &Path) -> std::io::Result<()> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    loop {
        match std::io::Write::write(&mut file, &[0; PAGE]) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

fn assert_disk_full(result: Result<()>) {
    match result {
        Err(error @ Error::Io { .. }) => {
            assert!(error.is_retryable(), "{error}");
            assert!(error.to_string().contains("free space"), "{error}");
        }
        other => panic!("expected a full disk, got {other:?}"),
    }
}

/// A real full disk: the plan log fills its last page, then appends fail part-way through a
/// record; snapshots fail at the plan log or at the snapshot. Each failure leaves the checkpoint
/// as it was, and once space is freed the same calls succeed in the same process.
#[test]
fn a_full_disk_stops_appends_and_snapshots_until_space_is_freed() -> TestResult {
    let Some(disk) = Tmpfs::mount(64) else {
        println!("skipped: cannot mount a tmpfs here (it takes root)");
        return Ok(());
    };
    let dir = disk.path().join("checkpoint");
    let filler = disk.path().join("filler");
    let mut store = started(&dir, 1)?;
    fill(&filler)?;

    let mut next = 2;
    let failed = loop {
        match store.append_plan(&plan(next)) {
            Ok(()) => next += 1,
            Err(e) => break Err(e),
        }
        assert!(next < 1_000, "the plan log never ran out of space");
    };
    assert_disk_full(failed);
    assert_disk_full(store.append_plan(&plan(next)));
    let log_path = files::plan_log_path(&dir, t(0));
    let log = plan_log::parse(&fs::read(&log_path)?).map_err(|d| d.into_error(&log_path))?;
    assert_eq!(log.plans, (1..next).map(plan).collect::<Vec<_>>());
    assert_eq!(log.torn_tail, None, "the partial record was not cut off");

    let unchanged = names(&dir)?;
    assert_disk_full(store.write_snapshot(&snapshot(next - 1)));
    assert_eq!(names(&dir)?, unchanged);
    // One free page: the new plan log fits, its snapshot does not.
    let len = fs::metadata(&filler)?.len();
    OpenOptions::new()
        .write(true)
        .open(&filler)?
        .set_len(len - u64::try_from(PAGE)?)?;
    assert_disk_full(store.write_snapshot(&snapshot(next - 1)));
    assert_eq!(names(&dir)?, unchanged);

    fs::remove_file(&filler)?;
    store.append_plan(&plan(next))?;
    store.write_snapshot(&snapshot(next))?;
    store.append_plan(&plan(next + 1))?;
    drop(store);
    assert_eq!(recover(&dir)?, resumed(next, [next + 1]));
    let inspection = inspect(&dir)?;
    assert!(inspection.temp_files.is_empty());
    assert!(
        inspection
            .snapshots
            .iter()
            .all(|s| matches!(s.status, SnapshotStatus::Valid(_))),
        "{inspection}"
    );
    Ok(())
}

#[test]
fn writing_before_recovery_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = open(dir.path())?;
    assert!(store.write_snapshot(&snapshot(0)).is_err());
    assert!(store.append_plan(&plan(1)).is_err());
    store.recover(&identity())?;
    assert!(
        store.append_plan(&plan(1)).is_err(),
        "no initial snapshot yet"
    );
    Ok(())
}

#[test]
fn reset_keeps_offsets_and_plans_and_drops_state() -> TestResult {
    let dir = tempfile::tempdir()?;
    drop(snapshotted_at_2(dir.path(), 3)?);
    let changed = PipelineIdentity::new("orders", ["orders"], "sqlite://orders.db table=orders")
        .with_operator("counts", 2);
    assert!(matches!(
        open(dir.path())?.recover(&changed),
        Err(Error::FingerprintMismatch { .. })
    ));

    let report = reset_keep_offsets(dir.path(), &changed)?;
    assert_eq!(report.dropped_state, ["counts"]);
    assert_eq!(report.logged_plans, 1);
    assert!(
        report
            .to_string()
            .contains("operator \"counts\" state schema 1 -> 2"),
        "{report}"
    );

    let Recovery::Resume {
        snapshot: reset,
        plans,
    } = open(dir.path())?.recover(&changed)?
    else {
        panic!("expected to resume");
    };
    assert_eq!(reset.batch_time, t(2));
    assert_eq!(reset.positions, snapshot(2).positions);
    assert!(reset.operator_state.is_empty());
    assert_eq!(plans, [plan(3)]);
    Ok(())
}

#[test]
fn inspection_reads_like_a_report() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = snapshotted_at_2(dir.path(), 3)?;
    store.append_plan(&plan(4))?;
    drop(store);
    truncate_by(&files::plan_log_path(dir.path(), t(2)), 2)?;

    let inspection = inspect(dir.path())?;
    assert_eq!(inspection.lock, LockStatus::Free);
    assert_eq!(inspection.snapshots.len(), 2);
    assert_eq!(inspection.plan_logs[1].batches, Some((t(1), t(3))));
    assert_eq!(
        inspection.recovery,
        RecoveryPreview::Resume {
            snapshot: t(2),
            replay: Some((t(3), t(3), 1)),
            positions: snapshot(3).positions,
        }
    );
    let text = inspection.to_string();
    for expected in [
        "snapshot-200.ckpt  valid",
        "state: counts (schema 1, 8 bytes)",
        "orders/1  20",
        "plans-200.log  1 plan, batches 300 to 300; torn last record at byte offset",
        "plans-0.log  3 plans, batches 100 to 300",
        "recovery: resume from snapshot 200, then replay 1 logged plan (batches 300 to 300)",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    println!("{text}");
    Ok(())
}

/// Measured on the 2-core development machine, debug build: about 5 ms to recover 1,000 plans of
/// 2 partitions (run with `--nocapture` to see it).
#[test]
#[allow(clippy::disallowed_methods)] // timing the test itself, not pipeline output
fn recovery_of_a_thousand_logged_plans() -> TestResult {
    let dir = tempfile::tempdir()?;
    drop(started(dir.path(), 1_000)?);
    let started_at = std::time::Instant::now();
    let recovery = recover(dir.path())?;
    let took = started_at.elapsed();
    assert_eq!(recovery, resumed(0, 1..=1_000));
    println!("recovered 1,000 logged plans in {took:?}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A crash in the middle of the last append leaves any prefix of its record (or zeros where the
    /// file system extended the file but not the data); recovery always returns the plans before it.
    #[test]
    fn cut_in_the_last_record_recovers_the_plans_before_it(
        plans in 1..12i64,
        cut in any::<prop::sample::Index>(),
        zero_fill in any::<bool>(),
    ) {
        let dir = tempfile::tempdir()?;
        drop(started(dir.path(), plans - 1)?);
        let log = files::plan_log_path(dir.path(), t(0));
        let before = fs::read(&log)?;
        drop(started_again_and_append(dir.path(), plans)?);
        let whole = fs::read(&log)?;
        let record = whole.len() - before.len();
        let kept = cut.index(record); // strictly less than the whole record
        let mut torn = whole[..before.len() + kept].to_vec();
        if zero_fill {
            torn.resize(whole.len(), 0);
        }
        fs::write(&log, &torn)?;

        // Zeros over a record that ends in zeros give the whole record back.
        let survivors = if torn == whole { plans } else { plans - 1 };
        let recovered = recover(dir.path())?;
        prop_assert_eq!(recovered, resumed(0, 1..=survivors));
    }
}

fn started_again_and_append(dir: &Path, i: i64) -> Result<CheckpointStore> {
    let mut store = open(dir)?;
    store.recover(&identity())?;
    store.append_plan(&plan(i))?;
    Ok(store)
}
