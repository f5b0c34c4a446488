//! Reading a checkpoint directory into what to resume from: the newest valid snapshot and the
//! plans logged after it. Nothing here writes; the store applies the result.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::plan::{BatchPlan, BatchTime};

use super::chain::Chain;
use super::files::{self, Listing};
use super::plan_log::{self, TornTail};
use super::snapshot::{Snapshot, SnapshotDefect};

/// What a recovery resumes from.
#[derive(Debug)]
pub(crate) struct Found {
    /// The newest valid snapshot.
    pub snapshot: Snapshot,
    /// Its file.
    pub snapshot_path: PathBuf,
    /// The plans logged after it, in batch-time order, checked for contiguity.
    pub plans: Vec<BatchPlan>,
    /// Newer snapshot files that were skipped, and why.
    pub skipped: Vec<(PathBuf, String)>,
    /// Plan logs whose torn last record was left out.
    pub torn: Vec<TornLog>,
}

/// A plan log that ends in a torn record.
#[derive(Debug)]
pub(crate) struct TornLog {
    /// The file.
    pub path: PathBuf,
    /// Its length without the torn record.
    pub valid_len: u64,
    /// The torn record.
    pub tail: TornTail,
}

/// Finds what to resume from; `None` when the directory holds nothing of a checkpoint (temporary
/// files do not count: they are never part of one).
pub(crate) fn find(dir: &Path, listing: &Listing) -> Result<Option<Found>> {
    if listing.snapshots.is_empty()
        && listing.other_files.is_empty()
        && only_empty_plan_logs(listing)?
    {
        return Ok(None);
    }
    let mut skipped = Vec::new();
    let mut chosen = None;
    for (t, path) in listing.snapshots.iter().rev() {
        match Snapshot::decode(&files::read(path)?) {
            Ok(snapshot) if snapshot.batch_time == *t => {
                chosen = Some((snapshot, path.clone()));
                break;
            }
            Ok(snapshot) => skipped.push((
                path.clone(),
                format!(
                    "its name says batch {t} but it holds batch {}",
                    snapshot.batch_time
                ),
            )),
            Err(SnapshotDefect::Damaged(why)) => skipped.push((path.clone(), why)),
            Err(SnapshotDefect::NewerFormat(version)) => {
                return Err(SnapshotDefect::newer_format_error(path, version));
            }
        }
    }
    let Some((snapshot, snapshot_path)) = chosen else {
        return Err(no_valid_snapshot(dir, listing, &skipped));
    };
    let (plans, torn) = logged_plans_after(listing, &snapshot, &snapshot_path)?;
    Ok(Some(Found {
        snapshot,
        snapshot_path,
        plans,
        skipped,
        torn,
    }))
}

/// True when every plan log holds no plan (or there is none): what a crash leaves between the
/// creation of the first snapshot's plan log and the rename of the snapshot itself. No batch was
/// planned against it, so the directory holds nothing of a checkpoint yet.
fn only_empty_plan_logs(listing: &Listing) -> Result<bool> {
    for (_, path) in &listing.plan_logs {
        let bytes = files::read(path)?;
        let holds_plans = plan_log::parse(&bytes).map_or(true, |log| !log.plans.is_empty());
        if holds_plans {
            return Ok(false);
        }
    }
    Ok(true)
}

fn no_valid_snapshot(dir: &Path, listing: &Listing, skipped: &[(PathBuf, String)]) -> Error {
    let found = if skipped.is_empty() {
        let names: Vec<String> = listing
            .plan_logs
            .iter()
            .map(|(_, path)| path)
            .chain(&listing.other_files)
            .map(|path| file_name(path))
            .collect();
        format!("no snapshot file among {}", names.join(", "))
    } else {
        let reasons: Vec<String> = skipped
            .iter()
            .map(|(path, why)| format!("{}: {why}", file_name(path)))
            .collect();
        reasons.join("; ")
    };
    Error::checkpoint(
        dir,
        format!(
            "the directory holds files but no valid snapshot ({found}); restore it from a backup or \
             remove it to start over"
        ),
    )
}

/// The plans after `snapshot` from every plan log that can hold them: `plans-<s>.log` for every
/// `s >= snapshot.batch_time`, including the logs of newer snapshots that were skipped.
fn logged_plans_after(
    listing: &Listing,
    snapshot: &Snapshot,
    snapshot_path: &Path,
) -> Result<(Vec<BatchPlan>, Vec<TornLog>)> {
    let after = snapshot.batch_time;
    if !listing.plan_logs.iter().any(|(base, _)| *base == after) {
        // Written and synced before its snapshot, so only someone else can have removed it.
        return Err(Error::checkpoint(
            snapshot_path,
            format!(
                "its plan log plans-{after}.log is missing. Plans logged after the snapshot may \
                 already have had effects, and resuming without them could lose or double \
                 records: restore the file from a backup"
            ),
        ));
    }
    let mut merged: BTreeMap<BatchTime, (BatchPlan, &Path)> = BTreeMap::new();
    let mut torn = Vec::new();
    for (_, path) in listing.plan_logs.iter().filter(|(base, _)| *base >= after) {
        let contents = plan_log::parse(&files::read(path)?).map_err(|d| d.into_error(path))?;
        if let Some(tail) = contents.torn_tail {
            torn.push(TornLog {
                path: path.clone(),
                valid_len: contents.valid_len,
                tail,
            });
        }
        for plan in contents.plans.into_iter().filter(|p| p.batch_time > after) {
            match merged.entry(plan.batch_time) {
                Entry::Vacant(entry) => {
                    entry.insert((plan, path));
                }
                Entry::Occupied(entry) if entry.get().0 == plan => {}
                Entry::Occupied(entry) => {
                    return Err(Error::checkpoint(
                        path,
                        format!(
                            "it logs a different plan for batch {} than {} does; a logged plan is \
                             never replanned, so the checkpoint is damaged: restore it from a backup",
                            plan.batch_time,
                            entry.get().1.display()
                        ),
                    ));
                }
            }
        }
    }
    let mut chain = Chain::new(after, snapshot.positions.clone());
    for (plan, path) in merged.values() {
        chain.push(plan).map_err(|violation| {
            Error::checkpoint(
                *path,
                format!(
                    "the plans logged after {} do not line up (invariant 1): {violation}. Resuming \
                     would lose or double records; restore the checkpoint from a backup",
                    file_name(snapshot_path)
                ),
            )
        })?;
    }
    let plans = merged.into_values().map(|(plan, _)| plan).collect();
    Ok((plans, torn))
}

/// A file's name for messages.
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
