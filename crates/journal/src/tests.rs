//! The journal against a real SQLite file in a temp dir.

use std::sync::mpsc as std_mpsc;

use serde_json::json;

use super::*;

fn open(dir: &Path) -> Journal {
    let opened = Journal::open(dir).expect("journal opens");
    assert!(opened.moved_aside.is_none());
    opened.journal
}

fn submit(id: Uuid, at_ms: u64) -> Op {
    Op::Submit {
        job_id: id,
        spec: json!({"capability": "echo", "input": {"n": 1}}),
        blobs: json!([]),
        at_ms,
    }
}

fn end(id: Uuid, bytes: u64, at_ms: u64) -> Op {
    Op::End {
        job_id: id,
        outcome: json!({"ok": "done"}),
        result_bytes: bytes,
        at_ms,
        fetched: false,
    }
}

#[test]
fn a_job_moves_through_its_states_and_survives_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    {
        let mut j = open(dir.path());
        j.apply(&[submit(a, 10), submit(b, 11)]).expect("submit");
        j.apply(&[Op::Attempt {
            job_id: a,
            attempt: 1,
            worker: "w1".into(),
        }])
        .expect("attempt");
        j.apply(&[Op::Requeue { job_id: a }]).expect("requeue");
        j.apply(&[Op::Attempt {
            job_id: a,
            attempt: 2,
            worker: "w2".into(),
        }])
        .expect("attempt 2");
        j.apply(&[end(b, 5, 20)]).expect("end");
    }
    // A new connection sees exactly what was committed.
    let mut j = open(dir.path());
    let unfinished = j.unfinished().expect("unfinished");
    assert_eq!(unfinished.len(), 1);
    let row = &unfinished[0];
    assert_eq!(
        (row.job_id, row.state, row.attempt),
        (a, JobState::Running, 2)
    );
    assert_eq!(row.worker.as_deref(), Some("w2"));
    assert_eq!(row.spec["input"]["n"], 1);

    let done = j.job(b).expect("read").expect("b is kept");
    assert_eq!(done.state, JobState::Ended);
    assert_eq!(done.outcome, Some(json!({"ok": "done"})));
    assert_eq!((done.ended_ms, done.fetched_ms), (Some(20), None));

    // An ended job ignores late attempt changes; fetching keeps the first time.
    j.apply(&[
        Op::Attempt {
            job_id: b,
            attempt: 9,
            worker: "late".into(),
        },
        Op::Fetched {
            job_id: b,
            at_ms: 30,
        },
        Op::Fetched {
            job_id: b,
            at_ms: 40,
        },
    ])
    .expect("late changes");
    let done = j.job(b).expect("read").expect("b");
    assert_eq!(
        (done.state, done.attempt, done.fetched_ms),
        (JobState::Ended, 0, Some(30))
    );
    assert!(j.job(Uuid::new_v4()).expect("read").is_none());
}

#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = open(dir.path());
    let err = Journal::open(dir.path()).expect_err("in use");
    assert!(matches!(err, JournalError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("--data-dir"), "{err}");
    drop(first);
    drop(open(dir.path()));
}

#[test]
fn a_failed_transaction_records_none_of_its_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut j = open(dir.path());
    let a = Uuid::new_v4();
    j.apply(&[submit(a, 1)]).expect("submit");
    let b = Uuid::new_v4();
    // `a` again breaks the primary key: `b` must not be recorded either.
    let err = j
        .apply(&[submit(b, 2), submit(a, 3)])
        .expect_err("duplicate id");
    assert!(err.to_string().contains("journal write failed"), "{err}");
    assert!(j.job(b).expect("read").is_none());
}

#[test]
fn a_journal_from_a_newer_jobmesh_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path()));
    let path = dir.path().join(FILE_NAME);
    let conn = Connection::open(&path).expect("raw open");
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("bump version");
    drop(conn);
    let err = Journal::open(dir.path()).expect_err("newer schema");
    assert!(matches!(err, JournalError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1));
    assert!(err.to_string().contains("newer jobmesh"), "{err}");
    let conn = Connection::open(&path).expect("still there");
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(v, SCHEMA_VERSION + 1);
}

#[test]
fn a_corrupt_journal_is_moved_aside_whole_and_a_fresh_one_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(FILE_NAME);
    let garbage = b"this is not a database, but it was someone's journal ".repeat(100);
    for n in 1..=2 {
        std::fs::write(&path, &garbage).expect("write garbage");
        let opened = Journal::open(dir.path()).expect("opens fresh");
        let moved = opened.moved_aside.expect("moved aside");
        assert_eq!(moved, dir.path().join(format!("{FILE_NAME}.corrupt.{n}")));
        assert_eq!(std::fs::read(&moved).expect("kept"), garbage);
        let mut j = opened.journal;
        j.apply(&[submit(Uuid::new_v4(), 1)])
            .expect("fresh journal works");
        drop(j);
        std::fs::remove_file(dir.path().join(format!("{FILE_NAME}-wal"))).ok();
        std::fs::remove_file(dir.path().join(format!("{FILE_NAME}-shm"))).ok();
    }
}

#[test]
fn ended_results_expire_by_age_then_by_total_size_oldest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut j = open(dir.path());
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let running = Uuid::new_v4();
    j.apply(&[submit(running, 0)]).expect("submit");
    for (i, id) in ids.iter().enumerate() {
        let at = 100 * (i as u64 + 1);
        j.apply(&[submit(*id, at), end(*id, 10, at)])
            .expect("ended");
    }
    // ttl 250 at 450: the one ended at 100 is too old.
    let gone = j.expire(450, 250, 1_000).expect("expire");
    assert_eq!(
        gone.iter().map(|r| r.job_id).collect::<Vec<_>>(),
        vec![ids[0]]
    );
    // 30 bytes kept, cap 15: the two oldest go.
    let gone = j.expire(450, 250, 15).expect("expire");
    assert_eq!(
        gone.iter().map(|r| r.job_id).collect::<Vec<_>>(),
        vec![ids[1], ids[2]]
    );
    assert!(j.job(ids[3]).expect("read").is_some());
    // A job that has not ended never expires.
    assert_eq!(j.unfinished().expect("read").len(), 1);
}

#[test]
fn undelivered_results_are_kept_per_submitter_until_delivered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut j = open(dir.path());
    let keep = |id, attempt, submitter: &str, at| {
        Op::KeepUndelivered(Undelivered {
            job_id: id,
            attempt,
            submitter: submitter.into(),
            result: json!({"value": attempt}),
            blobs: json!([]),
            finished_ms: at,
        })
    };
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    j.apply(&[
        keep(a, 1, "s1", 5),
        keep(b, 1, "s2", 6),
        keep(a, 2, "s1", 7),
    ])
    .expect("keep");
    let s1 = j.undelivered(Some("s1")).expect("read");
    assert_eq!(
        s1.iter().map(|u| (u.job_id, u.attempt)).collect::<Vec<_>>(),
        vec![(a, 1), (a, 2)]
    );
    j.apply(&[Op::Delivered {
        job_id: a,
        attempt: 1,
    }])
    .expect("delivered");
    assert_eq!(j.undelivered(None).expect("read").len(), 2);
    j.apply(&[Op::SetMeta {
        key: "peer_id".into(),
        value: "abc".into(),
    }])
    .expect("meta");
    assert_eq!(j.meta("peer_id").expect("read").as_deref(), Some("abc"));
    assert_eq!(j.meta("other").expect("read"), None);
}

/// Holds the journal thread inside a read until the returned sender fires.
async fn block(handle: &JournalHandle) -> (std_mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (release, wait) = std_mpsc::channel::<()>();
    let (entered_tx, entered) = tokio::sync::oneshot::channel();
    let h = handle.clone();
    let task = tokio::spawn(async move {
        h.read(move |_| {
            let _ = entered_tx.send(());
            let _ = wait.recv();
            Ok(())
        })
        .await
        .expect("blocking read");
    });
    entered.await.expect("the thread is inside the read");
    (release, task)
}

#[tokio::test]
async fn queued_commits_share_a_transaction_and_a_bad_one_fails_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (handle, _stopped) = spawn(open(dir.path())).expect("thread");
    let dup = Uuid::new_v4();
    handle
        .commit(vec![submit(dup, 1)], Durability::Synced)
        .await
        .expect("first");

    let (release, blocker) = block(&handle).await;
    let good: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
    let mut waits = Vec::new();
    for (i, id) in good.iter().enumerate() {
        waits.push(
            handle
                .try_commit(vec![submit(*id, i as u64)], Durability::Written)
                .expect("queued"),
        );
    }
    let bad = handle
        .try_commit(vec![submit(dup, 99)], Durability::Synced)
        .expect("queued");
    release.send(()).expect("release");
    blocker.await.expect("blocker");
    for w in waits {
        w.done().await.expect("a good commit is durable");
    }
    let err = bad.done().await.expect_err("the duplicate fails");
    assert!(matches!(err, JournalError::Write(_)), "{err}");
    let n = handle
        .read(|j| Ok(j.unfinished()?.len()))
        .await
        .expect("read");
    assert_eq!(n, 51);
}

#[tokio::test]
async fn a_full_queue_hands_the_changes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (handle, _stopped) = spawn(open(dir.path())).expect("thread");
    let (release, blocker) = block(&handle).await;
    let mut queued = Vec::new();
    let refused = loop {
        match handle.try_commit(vec![submit(Uuid::new_v4(), 0)], Durability::Synced) {
            Ok(c) => queued.push(c),
            Err(ops) => break ops,
        }
        assert!(queued.len() <= JOURNAL_QUEUE, "the queue is bounded");
    };
    assert_eq!(queued.len(), JOURNAL_QUEUE);
    assert_eq!(refused.len(), 1, "the refused change comes back intact");
    release.send(()).expect("release");
    blocker.await.expect("blocker");
    for c in queued {
        c.done().await.expect("durable");
    }
}

#[tokio::test]
async fn the_thread_ends_when_the_last_handle_goes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (handle, stopped) = spawn(open(dir.path())).expect("thread");
    let pending = handle
        .try_commit(vec![submit(Uuid::new_v4(), 0)], Durability::Written)
        .expect("queued");
    drop(handle);
    // What was queued before the last handle went is still written.
    pending.done().await.expect("durable");
    stopped.wait().await;
    assert_eq!(open(dir.path()).unfinished().expect("read").len(), 1);
}

#[test]
fn written_and_synced_commits_mix_and_both_are_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    {
        let mut j = open(dir.path());
        j.apply_as(&[submit(a, 1)], Durability::Written)
            .expect("written");
        j.apply_as(&[submit(b, 2)], Durability::Synced)
            .expect("synced");
        j.apply_as(&[end(a, 1, 3)], Durability::Written)
            .expect("written again");
    }
    let j = open(dir.path());
    assert_eq!(j.job(a).expect("read").expect("a").state, JobState::Ended);
    assert_eq!(j.job(b).expect("read").expect("b").state, JobState::Queued);
}

/// A crash's leftovers: the database and its write-ahead log as they are
/// on disk while the journal is open (closing would checkpoint the log).
fn crashed_copy(from: &Path, to: &Path) -> Vec<u8> {
    std::fs::copy(from.join(FILE_NAME), to.join(FILE_NAME)).expect("copy db");
    std::fs::read(with_suffix(&from.join(FILE_NAME), "-wal")).expect("the log")
}

#[test]
fn a_damaged_write_ahead_log_is_reported_and_kept_but_a_torn_tail_is_not() {
    let live = tempfile::tempdir().expect("tempdir");
    let ids: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let mut j = open(live.path());
    for (n, id) in ids.iter().enumerate() {
        j.apply(&[submit(*id, n as u64)])
            .expect("one transaction each");
    }
    let wal_of = |dir: &Path| with_suffix(&dir.join(FILE_NAME), "-wal");

    // One byte of a frame in the middle changed: SQLite replays the log up
    // to it and drops the jobs after it, which must not go unnoticed.
    let damaged = tempfile::tempdir().expect("tempdir");
    let mut log = crashed_copy(live.path(), damaged.path());
    let frame = 24 + 4096;
    let frames = (log.len() - 32) / frame;
    assert!(frames >= 6, "{frames} frames");
    log[32 + frame * (frames / 2) + 100] ^= 0x55;
    std::fs::write(wal_of(damaged.path()), &log).expect("write");
    let opened = Journal::open(damaged.path()).expect("opens");
    let (damage, copy) = opened.wal_damage.expect("the damage is reported");
    assert_eq!(damage.at, DamageAt::Frame((frames / 2) as u64), "{damage}");
    assert!(damage.ignored_frames >= 2, "{damage}");
    assert_eq!(std::fs::read(&copy).expect("the kept copy"), log);
    let after = opened.journal;
    let kept = after.unfinished().expect("unfinished").len();
    assert!(
        kept < ids.len(),
        "SQLite dropped jobs: {kept} of {}",
        ids.len()
    );

    // The last frame cut short, as a crash during a write leaves it: all
    // that was committed before is replayed, and nothing is reported.
    let torn = tempfile::tempdir().expect("tempdir");
    let log = crashed_copy(live.path(), torn.path());
    std::fs::write(wal_of(torn.path()), &log[..log.len() - 1000]).expect("write");
    let opened = Journal::open(torn.path()).expect("opens");
    assert!(opened.wal_damage.is_none());
    let replayed = opened.journal;
    assert_eq!(
        replayed.unfinished().expect("unfinished").len(),
        ids.len() - 1
    );

    // An intact log: nothing to report.
    let intact = tempfile::tempdir().expect("tempdir");
    let log = crashed_copy(live.path(), intact.path());
    std::fs::write(wal_of(intact.path()), &log).expect("write");
    let opened = Journal::open(intact.path()).expect("opens");
    assert!(opened.wal_damage.is_none());
    let whole = opened.journal;
    assert_eq!(whole.unfinished().expect("unfinished").len(), ids.len());
    drop(j);
}
