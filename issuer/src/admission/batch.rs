//! LMAX-style batching of concurrent applies: a worker takes whatever is waiting (up to a
//! bound) and decides it in one step, never waiting for a batch to fill. An idle campaign
//! gets batches of one, with no added wait; a busy one gets one round trip per batch
//! instead of one per apply.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot};

/// Most applies decided in one step: bounds the time one step holds Redis (or the
/// ledger's lock) and the size of its reply.
pub const MAX_BATCH: usize = 256;

/// The worker is gone (the runtime is shutting down).
#[derive(Clone, Debug, thiserror::Error)]
#[error("the admission worker stopped")]
pub struct WorkerGone;

/// Where one request's answer goes: answered once, by whoever decides it.
pub struct Reply<Answer>(Option<oneshot::Sender<Answer>>);

impl<Answer> Reply<Answer> {
    /// A reply and where it is received, for an answer given outside any queue.
    pub fn channel() -> (Self, oneshot::Receiver<Answer>) {
        let (answer_to, answer) = oneshot::channel();
        (Self(Some(answer_to)), answer)
    }

    /// Answers the request; a caller that went away (or never waited) no longer needs it.
    pub fn send(self, answer: Answer) {
        if let Some(to) = self.0 {
            let _ = to.send(answer);
        }
    }
}

/// A request and where its answer goes.
pub type Job<Request, Answer> = (Request, Reply<Answer>);

/// The sending side of one worker; cloned by every caller.
pub struct BatchQueue<Request, Answer> {
    jobs: mpsc::UnboundedSender<Job<Request, Answer>>,
}

impl<Request, Answer> Clone for BatchQueue<Request, Answer> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
        }
    }
}

impl<Request, Answer> BatchQueue<Request, Answer>
where
    Request: Send + 'static,
    Answer: Send + 'static,
{
    /// Starts a worker that hands each batch to `decide`, which answers every request of
    /// the batch, in order. The worker stops once every queue handle is dropped.
    pub fn spawn<Decide, Decided>(mut decide: Decide) -> Self
    where
        Decide: FnMut(Vec<Request>) -> Decided + Send + 'static,
        Decided: Future<Output = Vec<Answer>> + Send,
    {
        Self::spawn_replying(move |jobs: Vec<Job<Request, Answer>>| {
            let (requests, replies): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
            let decided = decide(requests);
            async move {
                for (reply, answer) in replies.into_iter().zip(decided.await) {
                    reply.send(answer);
                }
            }
        })
    }

    /// Starts a worker that hands each batch, with where each answer goes, to `decide`:
    /// it answers each request when it knows the answer, possibly after the worker took
    /// the next batch (e.g. from a task of its own). The next batch is taken once
    /// `decide`'s future is done. The worker stops once every queue handle is dropped.
    pub fn spawn_replying<Decide, Decided>(mut decide: Decide) -> Self
    where
        Decide: FnMut(Vec<Job<Request, Answer>>) -> Decided + Send + 'static,
        Decided: Future<Output = ()> + Send,
    {
        let (jobs, mut waiting) = mpsc::unbounded_channel::<Job<Request, Answer>>();
        let worker = async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
                decide(std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH))).await;
            }
        };
        tokio::spawn(worker);
        Self { jobs }
    }

    /// The worker under `key` in `queues` (one per campaign, say), spawned by `spawn` on
    /// first use.
    pub fn keyed(
        queues: &Mutex<HashMap<String, Self>>,
        key: &str,
        spawn: impl FnOnce() -> Self,
    ) -> Self {
        let mut queues = queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(queue) = queues.get(key) {
            return queue.clone();
        }
        let queue = spawn();
        queues.insert(key.to_string(), queue.clone());
        queue
    }

    /// Queues `request` and waits for its answer.
    pub async fn submit(&self, request: Request) -> Result<Answer, WorkerGone> {
        let (answer_to, answer) = oneshot::channel();
        self.jobs
            .send((request, Reply(Some(answer_to))))
            .map_err(|_| WorkerGone)?;
        answer.await.map_err(|_| WorkerGone)
    }

    /// Queues `request` without waiting: it is decided in a coming batch, and its answer
    /// is dropped (the worker's `decide` reports what matters of it).
    pub fn send(&self, request: Request) -> Result<(), WorkerGone> {
        self.jobs
            .send((request, Reply(None)))
            .map_err(|_| WorkerGone)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn waiting_requests_are_decided_together_and_each_gets_its_own_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let queue = BatchQueue::spawn(move |requests: Vec<u32>| {
            seen.lock().unwrap().push(requests.len());
            async move { requests.into_iter().map(|r| r * 10).collect() }
        });
        // Queued before the worker runs (current-thread runtime): one batch.
        let answers = futures::future::join_all((0..5).map(|r| queue.submit(r))).await;
        let answers: Vec<u32> = answers.into_iter().map(Result::unwrap).collect();
        assert_eq!(answers, vec![0, 10, 20, 30, 40]);
        assert_eq!(*sizes.lock().unwrap(), vec![5]);
        // Alone, a request is decided at once, in a batch of one.
        assert_eq!(queue.submit(7).await.unwrap(), 70);
        assert_eq!(*sizes.lock().unwrap(), vec![5, 1]);
    }

    #[tokio::test]
    async fn requests_sent_without_waiting_are_decided_with_the_others() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let decided = Arc::clone(&seen);
        let queue = BatchQueue::spawn(move |requests: Vec<u32>| {
            decided.lock().unwrap().push(requests.clone());
            async move { requests }
        });
        queue.send(1).unwrap();
        queue.send(2).unwrap();
        assert_eq!(queue.submit(3).await.unwrap(), 3);
        assert_eq!(*seen.lock().unwrap(), vec![vec![1, 2, 3]]);
    }

    #[tokio::test]
    async fn a_batch_never_exceeds_the_bound() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let queue = BatchQueue::spawn(move |requests: Vec<usize>| {
            seen.lock().unwrap().push(requests.len());
            async move { requests }
        });
        let count = 2 * MAX_BATCH + 3;
        let answers = futures::future::join_all((0..count).map(|r| queue.submit(r))).await;
        assert_eq!(answers.len(), count);
        assert_eq!(*sizes.lock().unwrap(), vec![MAX_BATCH, MAX_BATCH, 3]);
    }

    #[tokio::test]
    async fn a_replying_worker_answers_after_taking_the_next_batch() {
        let (held_to, mut held) = mpsc::unbounded_channel();
        let queue = BatchQueue::spawn_replying(move |jobs: Vec<Job<u32, u32>>| {
            let held_to = held_to.clone();
            async move {
                for (request, reply) in jobs {
                    // Even requests are answered later, from elsewhere.
                    if request % 2 == 0 {
                        let _ = held_to.send((request, reply));
                    } else {
                        reply.send(request * 10);
                    }
                }
            }
        });
        let first = tokio::spawn({
            let queue = queue.clone();
            async move { queue.submit(2).await }
        });
        assert_eq!(queue.submit(3).await.unwrap(), 30, "not held up by 2");
        let (request, reply) = held.recv().await.unwrap();
        assert_eq!(request, 2);
        reply.send(20);
        assert_eq!(first.await.unwrap().unwrap(), 20);
    }
}
