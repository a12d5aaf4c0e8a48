//! A panic in one host's work, caught: that host fails with an internal
//! error and a report, and the run goes on with the others (a panic that
//! escaped would end every host, some mid-install).

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

/// `work`, with a panic while it is polled turned into `Err(message)`.
/// Unwind safety is asserted: after a panic the caller keeps only what the
/// work wrote to its report, and the work itself is dropped, never polled again.
pub async fn caught<T>(work: impl Future<Output = T>) -> Result<T, String> {
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(move |cx: &mut Context<'_>| {
        let polled = catch_unwind(AssertUnwindSafe(|| Pin::as_mut(&mut work).poll(cx)));
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(payload) => Poll::Ready(Err(message(payload.as_ref()))),
        }
    })
    .await
}

/// What a panic said (`panic!("...")` gives a `&str` or a `String`).
pub fn message(payload: &(dyn Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(text), _) => (*text).to_owned(),
        (_, Some(text)) => text.clone(),
        _ => "a panic".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_after_an_await_becomes_an_error_with_its_message() {
        let work = async {
            tokio::task::yield_now().await;
            let index: Vec<u8> = Vec::new();
            index[usize::from(index.is_empty()) * 3]
        };
        let error = caught(work).await.unwrap_err();
        assert!(error.contains("index out of bounds"), "{error}");
    }

    #[tokio::test]
    async fn work_that_does_not_panic_gives_its_value() {
        assert_eq!(caught(async { 7 }).await, Ok(7));
    }
}
