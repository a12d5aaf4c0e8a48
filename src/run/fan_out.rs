//! The one fan-out: per-host work run concurrently, at most `--forks` at
//! a time, started in the order given. Apply, drift, audit and facts all
//! go through it.

use crate::random::random_u64;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Runs `work(i)` for every `i` of `members`, at most `forks` at once, and
/// returns each result with its `i`, in the order they finished. Without a
/// `splay`, hosts start in the order given; with one, each waits its own
/// random part of it first, so scheduled passes do not hit every host at
/// the same instant. Work that panics gives `lost(i, why)`: that host
/// alone fails, the others go on.
pub async fn fan_out<T, Work, Started>(
    members: &[usize],
    forks: usize,
    splay: Duration,
    work: Work,
    lost: impl Fn(usize, String) -> T,
) -> Vec<(usize, T)>
where
    T: Send + 'static,
    Work: Fn(usize) -> Started,
    Started: Future<Output = T> + Send + 'static,
{
    let forks = Arc::new(Semaphore::new(forks.max(1)));
    let mut running = tokio::task::JoinSet::new();
    let mut members_of_tasks = HashMap::new();
    for &i in members {
        // The fork is taken here, host by host, so that hosts start in
        // order (tasks racing for it would start in any order). With a
        // splay each host waits its own random delay first, and its start
        // is random anyway.
        let permit = if splay.is_zero() {
            Some(forks.clone().acquire_owned().await.expect("semaphore is never closed"))
        } else {
            None
        };
        let forks = forks.clone();
        let started = work(i);
        let task = running.spawn(async move {
            let _permit = match permit {
                Some(permit) => permit,
                None => {
                    tokio::time::sleep(splay.mul_f64(random_fraction())).await;
                    forks.acquire_owned().await.expect("semaphore is never closed")
                }
            };
            (i, started.await)
        });
        members_of_tasks.insert(task.id(), i);
    }
    let mut results = Vec::new();
    while let Some(done) = running.join_next_with_id().await {
        match done {
            Ok((_, done)) => results.push(done),
            Err(e) => {
                let Some(&i) = members_of_tasks.get(&e.id()) else { continue };
                let why = if e.is_panic() { crate::unwind::message(&*e.into_panic()) } else { e.to_string() };
                results.push((i, lost(i, why)));
            }
        }
    }
    results
}

/// A number in [0, 1).
fn random_fraction() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn no_more_hosts_than_forks_run_at_once() {
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let members: Vec<usize> = (0..6).collect();
        let done = fan_out(
            &members,
            2,
            Duration::ZERO,
            |i| {
                let (now, most) = (now.clone(), most.clone());
                async move {
                    most.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    i * 10
                }
            },
            |_, _| usize::MAX,
        )
        .await;
        let mut done = done;
        done.sort();
        assert_eq!(done, (0..6).map(|i| (i, i * 10)).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn work_that_panics_fails_its_host_alone_with_the_panic_message() {
        let mut done = fan_out(
            &[0, 1],
            4,
            Duration::ZERO,
            |i| async move {
                assert!(i != 1, "a reply no parser foresaw");
                "ok".to_owned()
            },
            |i, why| format!("host {i} lost: {why}"),
        )
        .await;
        done.sort();
        assert_eq!(done[0], (0, "ok".to_owned()));
        assert!(done[1].1.starts_with("host 1 lost: a reply no parser foresaw"), "{done:?}");
    }
}
