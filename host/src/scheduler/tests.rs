//! The scheduler's rules, with jobs that block until the test releases them.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

fn config(workers: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_slow: 0,
        queue_timeout: Duration::from_secs(5),
        ..SchedulerConfig::for_workers(workers)
    }
}

/// A job that blocks its thread until the returned sender is dropped or
/// sent to, then returns `value`.
fn held<T: Send + 'static>(value: T) -> (impl FnOnce() -> T + Send + 'static, mpsc::Sender<()>) {
    let (release, wait) = mpsc::channel::<()>();
    let job = move || {
        let _ = wait.recv();
        value
    };
    (job, release)
}

/// Polls until `check` holds on the scheduler's stats (jobs start on other
/// threads and queues fill from other tasks).
async fn until(scheduler: &Scheduler, check: impl Fn(SchedulerStats) -> bool) {
    let started = Instant::now();
    while !check(scheduler.stats()) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "stats never matched: {:?}",
            scheduler.stats()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn runs_jobs_and_returns_their_results() {
    let scheduler = Scheduler::new(config(2)).unwrap();
    let answer = scheduler
        .run("p", RequestClass::Admission, || 6 * 7)
        .await
        .unwrap();
    assert_eq!(answer, 42);
    assert_eq!(scheduler.stats(), SchedulerStats::default());
}

#[tokio::test]
async fn a_policy_at_its_cap_waits_while_others_run() {
    let scheduler = Arc::new(
        Scheduler::new(SchedulerConfig {
            max_per_policy: 1,
            queue_timeout: Duration::from_millis(200),
            ..config(2)
        })
        .unwrap(),
    );
    let (job, release) = held("first");
    let first = tokio::spawn({
        let s = Arc::clone(&scheduler);
        async move { s.run("slow", RequestClass::Admission, job).await }
    });
    until(&scheduler, |s| s.in_slots == 1).await;

    // The same policy must wait for its own evaluation...
    let second = scheduler
        .run("slow", RequestClass::Admission, || "second")
        .await;
    let Err(ScheduleError::Saturated { limit, waited, .. }) = second else {
        panic!("expected a 503, got {second:?}");
    };
    assert_eq!(limit, Limit::Policy);
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    let message = ScheduleError::Saturated {
        limit,
        waited,
        config: Box::new(scheduler.config().clone()),
    }
    .to_string();
    assert!(message.contains("--max-workers-per-policy"), "{message}");

    // ...while another policy uses the free slot at once.
    let other = scheduler
        .run("healthy", RequestClass::Admission, || "healthy")
        .await;
    assert_eq!(other, Ok("healthy"));

    release.send(()).unwrap();
    assert_eq!(first.await.unwrap(), Ok("first"));
}

#[tokio::test]
async fn policies_take_turns_and_admission_goes_before_audit() {
    let scheduler = Arc::new(Scheduler::new(config(1)).unwrap());
    let order = Arc::new(Mutex::new(Vec::new()));
    let (job, release) = held(());
    let blocker = tokio::spawn({
        let s = Arc::clone(&scheduler);
        async move { s.run("blocker", RequestClass::Admission, job).await }
    });
    until(&scheduler, |s| s.in_slots == 1).await;

    // Queued in this order: an audit first, then three requests of `a`,
    // then one of `b`.
    let mut waiting = Vec::new();
    for (n, (policy, class)) in [
        ("audited", RequestClass::Audit),
        ("a", RequestClass::Admission),
        ("a", RequestClass::Admission),
        ("a", RequestClass::Admission),
        ("b", RequestClass::Admission),
    ]
    .into_iter()
    .enumerate()
    {
        let s = Arc::clone(&scheduler);
        let order = Arc::clone(&order);
        let label = format!("{policy}{n}");
        waiting.push(tokio::spawn(async move {
            s.run(policy, class, move || order.lock().unwrap().push(label))
                .await
        }));
        until(&scheduler, |s| s.queued_admission + s.queued_audit == n + 1).await;
    }
    release.send(()).unwrap();
    blocker.await.unwrap().unwrap();
    for task in waiting {
        task.await.unwrap().unwrap();
    }
    assert_eq!(
        *order.lock().unwrap(),
        ["a1", "b4", "a2", "a3", "audited0"],
        "b must not wait behind all of a's requests, and the audit goes last"
    );
}

#[tokio::test]
async fn audit_gets_a_bounded_share() {
    let scheduler = Arc::new(
        Scheduler::new(SchedulerConfig {
            max_audit: 1,
            queue_timeout: Duration::from_millis(150),
            ..config(2)
        })
        .unwrap(),
    );
    let (job, release) = held(());
    let audit = tokio::spawn({
        let s = Arc::clone(&scheduler);
        async move { s.run("p", RequestClass::Audit, job).await }
    });
    until(&scheduler, |s| s.in_slots == 1).await;
    let second = scheduler.run("q", RequestClass::Audit, || ()).await;
    assert!(
        matches!(
            second,
            Err(ScheduleError::Saturated {
                limit: Limit::Audit,
                ..
            })
        ),
        "{second:?}"
    );
    // Admission still has the other slot.
    assert_eq!(
        scheduler.run("q", RequestClass::Admission, || 1).await,
        Ok(1)
    );
    release.send(()).unwrap();
    audit.await.unwrap().unwrap();
}

#[tokio::test]
async fn every_worker_busy_gives_a_saturation_error_after_the_queue_timeout() {
    let scheduler = Arc::new(
        Scheduler::new(SchedulerConfig {
            queue_timeout: Duration::from_millis(100),
            ..config(1)
        })
        .unwrap(),
    );
    let (job, release) = held(());
    let running = tokio::spawn({
        let s = Arc::clone(&scheduler);
        async move { s.run("a", RequestClass::Admission, job).await }
    });
    until(&scheduler, |s| s.in_slots == 1).await;
    let started = Instant::now();
    let refused = scheduler.run("b", RequestClass::Admission, || ()).await;
    let elapsed = started.elapsed();
    let Err(error @ ScheduleError::Saturated { .. }) = refused else {
        panic!("{refused:?}");
    };
    assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
    assert!(
        error.to_string().contains("all 1 workers stayed busy"),
        "{error}"
    );
    assert_eq!(scheduler.stats().queued_admission, 0);
    release.send(()).unwrap();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_long_evaluation_moves_to_the_slow_lane_and_frees_its_slot() {
    let scheduler = Arc::new(
        Scheduler::new(SchedulerConfig {
            max_slow: 1,
            slow_after: Duration::from_millis(50),
            ..config(1)
        })
        .unwrap(),
    );
    let (first, release_first) = held(());
    let (second, release_second) = held(());
    let hog = tokio::spawn({
        let s = Arc::clone(&scheduler);
        async move { s.run("hog", RequestClass::Admission, first).await }
    });
    until(&scheduler, |s| s.slow == 1 && s.in_slots == 0).await;
    // A second long one takes the slot, and stays in it: the lane is full.
    let hog2 = tokio::spawn({
        let s = Arc::clone(&scheduler);
        async move { s.run("hog2", RequestClass::Admission, second).await }
    });
    until(&scheduler, |s| s.in_slots == 1).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(scheduler.stats().slow, 1);
    assert_eq!(scheduler.stats().in_slots, 1);
    release_first.send(()).unwrap();
    hog.await.unwrap().unwrap();
    // Its place in the lane is free again, so the second moves over.
    until(&scheduler, |s| s.slow == 1 && s.in_slots == 0).await;
    assert_eq!(
        scheduler
            .run("healthy", RequestClass::Admission, || 7)
            .await,
        Ok(7)
    );
    release_second.send(()).unwrap();
    hog2.await.unwrap().unwrap();
    until(&scheduler, |s| s == SchedulerStats::default()).await;
}

#[tokio::test]
async fn a_dropped_request_leaves_the_queue_and_a_panic_frees_its_slot() {
    let scheduler = Arc::new(Scheduler::new(config(1)).unwrap());
    let (job, release) = held(());
    let running = tokio::spawn({
        let s = Arc::clone(&scheduler);
        async move { s.run("a", RequestClass::Admission, job).await }
    });
    until(&scheduler, |s| s.in_slots == 1).await;
    let queued = tokio::spawn({
        let s = Arc::clone(&scheduler);
        async move { s.run("b", RequestClass::Admission, || ()).await }
    });
    until(&scheduler, |s| s.queued_admission == 1).await;
    queued.abort();
    until(&scheduler, |s| s.queued_admission == 0).await;
    release.send(()).unwrap();
    running.await.unwrap().unwrap();

    let panicked = scheduler
        .run("c", RequestClass::Admission, || panic!("boom"))
        .await;
    assert_eq!(panicked, Err::<(), _>(ScheduleError::Panicked));
    assert_eq!(
        scheduler.run("c", RequestClass::Admission, || 1).await,
        Ok(1)
    );
    assert_eq!(scheduler.stats(), SchedulerStats::default());
}

/// A delivering job's answer reaches the caller, with its slot free, while
/// the job is still running; the job then ends on its own.
#[tokio::test]
async fn a_delivered_answer_does_not_wait_for_the_rest_of_the_job() {
    let scheduler = Scheduler::new(config(1)).unwrap();
    let (release, wait) = mpsc::channel::<()>();
    let (ended, has_ended) = mpsc::channel::<()>();
    let answer = scheduler
        .run_delivering("p", RequestClass::Admission, move |delivery| {
            delivery.deliver("verdict");
            // The rest of the job (an instance's teardown) runs on.
            let _ = wait.recv();
            let _ = ended.send(());
        })
        .await
        .unwrap();
    assert_eq!(answer, "verdict");
    assert_eq!(
        scheduler.stats().in_slots,
        0,
        "the slot is free at delivery"
    );
    assert!(has_ended.try_recv().is_err(), "the job was still running");
    drop(release);
    has_ended
        .recv_timeout(Duration::from_secs(5))
        .expect("the job ends");
}

/// A delivering job that ends without delivering is a panicked one, and
/// leaves its slot free.
#[tokio::test]
async fn a_job_that_never_delivers_is_an_error() {
    let scheduler = Scheduler::new(config(1)).unwrap();
    let outcome = scheduler
        .run_delivering("p", RequestClass::Admission, |delivery: Delivery<()>| {
            drop(delivery);
        })
        .await;
    assert!(
        matches!(outcome, Err(ScheduleError::Panicked)),
        "{outcome:?}"
    );
    assert_eq!(scheduler.stats(), SchedulerStats::default());
}
