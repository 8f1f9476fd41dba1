//! Scenarios for step output: round trip, dedupe by sequence number, the per-step cap that
//! keeps the tail (and counts the worker's drops), and fencing of appends.

use super::fixtures::{
    WorkerSpec, append, append_ok, at, chunk, claim, claim_one, finish, read_all, register, step, submit, t0,
    worker,
};
use crate::{ClaimedAttempt, ConflictKind, JobStore, LogAppend, LogCut, LogQuery, StoreError};
use rota_domain::{AttemptId, AttemptOutcome, JobSpec, Stream};
use std::sync::Arc;

pub(super) async fn logs_round_trip(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a"), step("b")]), t0()).await;
    let w = worker(&s).await;
    let got = claim(&s, w, 2, at(1)).await;
    let (a, b) = (&got[0], &got[1]);

    // 5 MiB of every byte value in 1 MiB chunks, plus non-UTF-8 on stderr.
    let big: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let chunks =
        big.chunks(1 << 20).enumerate().map(|(i, c)| chunk(Stream::Stdout, i as u64, c.to_vec())).collect();
    append_ok(&s, append(w, a, chunks)).await;
    let odd = vec![0xff, 0xfe, 0x00, b'\n', 0xc3, 0x28, 0x80];
    append_ok(&s, append(w, a, vec![chunk(Stream::Stderr, 0, odd.clone())])).await;
    append_ok(&s, append(w, b, vec![chunk(Stream::Stdout, 0, b"from b\n".to_vec())])).await;

    let all = read_all(&s, id, None, 1 << 20).await;
    assert!(
        all.get(&("a".into(), Stream::Stdout)) == Some(&big),
        "5 MiB of stdout must round-trip byte-exact"
    );
    assert_eq!(all.get(&("a".into(), Stream::Stderr)), Some(&odd));
    assert_eq!(all.get(&("b".into(), Stream::Stdout)).map(Vec::as_slice), Some(&b"from b\n"[..]));

    let only_b = read_all(&s, id, Some("b"), 1 << 30).await;
    assert_eq!(only_b.keys().cloned().collect::<Vec<_>>(), [("b".to_string(), Stream::Stdout)]);

    // A tiny budget still returns one chunk per page; chunk metadata is complete.
    let q = LogQuery { job_id: id, step: Some("a".into()), after: 0, max_bytes: 1 };
    let page = s.read_logs(&q).await.unwrap();
    assert_eq!(page.chunks.len(), 1);
    let c = &page.chunks[0];
    assert_eq!((c.attempt_id, c.attempt, c.stream, c.data.len()), (a.attempt_id, 1, Stream::Stdout, 1 << 20));
    assert!(page.truncated.is_empty());

    // The tail: `a` wrote 5 MiB in 1 MiB chunks, then an odd-sized stderr chunk; read from
    // the tail cursor, a page holds the last chunks only.
    let from = s.log_tail_cursor(id, Some("a"), 1 << 20).await.unwrap();
    assert!(from > 0, "5 MiB do not fit in 1 MiB");
    let tail = s
        .read_logs(&LogQuery { job_id: id, step: Some("a".into()), after: from, max_bytes: 8 << 20 })
        .await
        .unwrap();
    let tail_bytes: usize = tail.chunks.iter().map(|c| c.data.len()).sum();
    assert!(tail_bytes <= 1 << 20 && !tail.chunks.is_empty(), "the tail is at most 1 MiB: {tail_bytes}");
    assert_eq!(tail.chunks.last().map(|c| c.stream), Some(Stream::Stderr), "the newest chunk is last");
    assert_eq!(s.log_tail_cursor(id, Some("b"), 1 << 20).await.unwrap(), 0, "all of `b` fits");

    let other = submit(&s, JobSpec::new(vec![step("z")]), at(2)).await;
    let empty = s.read_logs(&LogQuery { job_id: other, step: None, after: 0, max_bytes: 100 }).await.unwrap();
    assert!(empty.chunks.is_empty() && empty.next_cursor == 0);
}

pub(super) async fn logs_dedupe(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let w = worker(&s).await;
    let a = claim_one(&s, w, at(1)).await;
    let line = |n: u64| chunk(Stream::Stdout, n, format!("line {n}\n").into_bytes());
    append_ok(&s, append(w, &a, vec![line(0), line(1)])).await;
    append_ok(&s, append(w, &a, vec![line(1), line(2)])).await;
    append_ok(&s, append(w, &a, vec![line(0)])).await;
    // Same seq on the other stream is a different chunk.
    append_ok(&s, append(w, &a, vec![chunk(Stream::Stderr, 0, b"err\n".to_vec())])).await;
    let all = read_all(&s, id, None, 1 << 20).await;
    assert_eq!(
        all.get(&("a".into(), Stream::Stdout)).map(Vec::as_slice),
        Some(&b"line 0\nline 1\nline 2\n"[..])
    );
    assert_eq!(all.get(&("a".into(), Stream::Stderr)).map(Vec::as_slice), Some(&b"err\n"[..]));
}

pub(super) async fn logs_cap_keeps_tail(s: Arc<dyn JobStore>) {
    let mut capped = step("a");
    capped.log_cap = Some(100);
    let id = submit(&s, JobSpec::new(vec![capped]), t0()).await;
    let w = worker(&s).await;
    let a = claim_one(&s, w, at(1)).await;
    assert_eq!(a.log_cap, 100);
    let mut full = Vec::new();
    for seq in 0..10u64 {
        let data: Vec<u8> = (0..30).map(|i| (seq * 30 + i) as u8).collect();
        full.extend_from_slice(&data);
        append_ok(&s, append(w, &a, vec![chunk(Stream::Stdout, seq, data)])).await;
    }
    // Resending a dropped chunk must not bring it back.
    append_ok(&s, append(w, &a, vec![chunk(Stream::Stdout, 0, full[..30].to_vec())])).await;
    let kept =
        read_all(&s, id, None, 1 << 20).await.remove(&("a".into(), Stream::Stdout)).unwrap_or_default();
    assert!(full.ends_with(&kept), "the kept bytes are the tail of the output");
    assert!(kept.len() <= 100 && kept.len() >= 70, "about the cap is kept: {}", kept.len());
    let page = s.read_logs(&LogQuery { job_id: id, step: None, after: 0, max_bytes: 1 << 20 }).await.unwrap();
    let cut = (full.len() - kept.len()) as u64;
    let expected = LogCut {
        step: "a".into(),
        attempt_id: a.attempt_id,
        cap_bytes: cut,
        quota_pruned_bytes: 0,
        quota_refused_bytes: 0,
    };
    assert_eq!(page.truncated, std::slice::from_ref(&expected), "the cut is reported");

    // Bytes the worker dropped before sending count in the cut: the largest total it
    // reported, so a resent or late (smaller) report never counts twice.
    let worker_dropped = |seq: u64, dropped: u64| LogAppend {
        dropped,
        ..append(w, &a, vec![chunk(Stream::Stdout, seq, vec![b'z'; 10])])
    };
    append_ok(&s, worker_dropped(10, 500)).await;
    append_ok(&s, worker_dropped(10, 500)).await;
    append_ok(&s, worker_dropped(11, 300)).await;
    let kept =
        read_all(&s, id, None, 1 << 20).await.remove(&("a".into(), Stream::Stdout)).unwrap_or_default();
    let page = s.read_logs(&LogQuery { job_id: id, step: None, after: 0, max_bytes: 1 << 20 }).await.unwrap();
    let cap_bytes = (full.len() + 20 - kept.len()) as u64 + 500;
    assert_eq!(
        page.truncated,
        [LogCut { cap_bytes, ..expected }],
        "what the server cut plus the 500 bytes the worker dropped"
    );
}

pub(super) async fn logs_refused_when_not_held(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a"), step("b")]), t0()).await;
    let w = worker(&s).await;
    let other = register(&s, WorkerSpec { name: "w2", ..WorkerSpec::default() }, t0()).await;
    let got = claim(&s, w, 2, at(1)).await;
    let (a, b) = (&got[0], &got[1]);
    let bytes = || vec![chunk(Stream::Stdout, 0, b"x".to_vec())];

    let out = s.append_logs(vec![append(other, a, bytes()), append(w, a, bytes())]).await.unwrap();
    assert!(
        matches!(&out[0], Err(StoreError::Conflict(ConflictKind::NotHeld, _))),
        "another session's append: {:?}",
        out[0]
    );
    assert!(out[1].is_ok(), "the holder's append in the same batch: {:?}", out[1]);
    let unknown = ClaimedAttempt { attempt_id: AttemptId(i64::MAX - 3), ..a.clone() };
    let out = s.append_logs(vec![append(w, &unknown, bytes())]).await.unwrap();
    assert!(
        matches!(&out[0], Err(StoreError::Conflict(ConflictKind::WrongAttempt, _))),
        "unknown attempt: {:?}",
        out[0]
    );
    let mut wrong_step = append(w, a, bytes());
    wrong_step.step = "b".into();
    let out = s.append_logs(vec![wrong_step]).await.unwrap();
    assert!(
        matches!(&out[0], Err(StoreError::Conflict(ConflictKind::WrongAttempt, _))),
        "attempt of another step: {:?}",
        out[0]
    );

    finish(&s, w, b, AttemptOutcome::Succeeded, at(2)).await;
    let out = s.append_logs(vec![append(w, b, bytes())]).await.unwrap();
    assert!(
        matches!(&out[0], Err(StoreError::Conflict(ConflictKind::Ended, _))),
        "append after the attempt ended: {:?}",
        out[0]
    );
    let all = read_all(&s, id, None, 1 << 20).await;
    assert_eq!(all.len(), 1, "only the holder's chunk was stored: {all:?}");
}
