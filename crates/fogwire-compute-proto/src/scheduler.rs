//! The hub as a state machine.
//!
//! A job is split into tasks; each task runs on `needed` workers
//! (replicas). A replica runs, then commits (a hash of its outcome bound to
//! the worker), and only once no replica of the task is still running are
//! the committed ones asked to reveal. When every replica has revealed,
//! the outcome a majority agrees on is accepted; dissenters lose
//! reputation, and if there is no majority two more replicas are added.
//! A replica that misses its deadline, or whose worker vanishes, is
//! counted silent and replaced on another worker.
//!
//! Nothing here reads a clock or touches the network: the driver feeds in
//! events and the time, and carries out the [`Action`]s it polls.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use fogwire_identity::NodeId;
use serde::{Deserialize, Serialize};

use crate::{
    Commitment, Digest, JobId, JobSpec, Outcome, Replication, Reveal, SpecError, TaskSpec,
    spec::REPLICAS_MAX,
};

/// Tunables of the scheduler.
#[derive(Debug, Clone)]
pub struct Config {
    /// Time a replica gets beyond its wall-time limit to fetch its inputs
    /// and commit.
    pub commit_grace_ms: u64,
    /// Time a committed replica gets to reveal.
    pub reveal_timeout_ms: u64,
    /// Agreements in a row after which an adaptive task may run on that
    /// worker alone.
    pub trusted_streak: u32,
    /// Of 256 tasks a trusted worker gets, how many are still replicated
    /// in full (spot checks).
    pub spot_checks_per_256: u8,
    /// Replicas added when a task's replicas disagree with no majority.
    pub replicas_on_disagreement: u8,
    /// Replicas a task may use up beyond its `needed` (silent, failed,
    /// lying) before it fails.
    pub spare_attempts: u32,
    /// Jobs that are not ended, at most.
    pub jobs_active_max: usize,
    /// Log lines kept per job (older ones are dropped and counted).
    pub log_lines_max: usize,
    /// Ended jobs remembered (the oldest are forgotten beyond it).
    pub ended_jobs_max: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            commit_grace_ms: 30_000,
            reveal_timeout_ms: 10_000,
            trusted_streak: 10,
            spot_checks_per_256: 51,
            replicas_on_disagreement: 2,
            spare_attempts: 6,
            jobs_active_max: 1000,
            log_lines_max: 1000,
            ended_jobs_max: 1000,
        }
    }
}

/// A worker's record with this hub.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reputation {
    /// Tasks where it was in the accepted majority.
    pub agreed: u64,
    /// Tasks where it was not, or revealed what it had not committed to.
    pub dissented: u64,
    /// Replicas it took and never finished.
    pub silent: u64,
    /// Agreements since its last dissent or silence.
    pub streak: u32,
}

impl Reputation {
    /// Higher is better: the share of agreements, with a prior of one
    /// unknown (so a new worker starts at 0.5).
    pub fn score(&self) -> f64 {
        let bad = self.dissented * 4 + self.silent;
        (self.agreed as f64 + 1.0) / ((self.agreed + bad) as f64 + 2.0)
    }
}

/// Where a job stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    /// Every task has an accepted outcome, stored at the hub.
    Done,
    Failed(String),
    Cancelled,
}

impl JobState {
    pub fn is_ended(&self) -> bool {
        !matches!(self, JobState::Running)
    }
}

/// Where a task stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Replicas running, committing or revealing.
    Running,
    /// A quorum agreed on this outcome; `stored` once the hub holds its
    /// output blobs.
    Accepted {
        outcome: Outcome,
        agreed: Vec<Digest>,
        stored: bool,
    },
    Failed(String),
}

/// One run of a task on one worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub worker: Digest,
    pub state: ReplicaState,
    /// When it must have moved on (committed, or revealed).
    pub deadline_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaState {
    Running,
    Committed(Commitment),
    Revealing(Commitment),
    Revealed(Reveal),
    /// In the accepted majority.
    Agreed,
    /// Outvoted, or its reveal did not match its commitment.
    Dissented,
    /// Missed its deadline, or its worker vanished.
    Silent,
    /// The worker refused it (bad input: it will refuse it again).
    Failed(String),
    /// The worker could not run it for now (unreachable, busy, stopping):
    /// it may be asked again.
    Interrupted(String),
    Cancelled,
}

impl ReplicaState {
    /// Waits on its worker (a committed replica waits on the others,
    /// and so has no deadline of its own).
    fn has_deadline(&self) -> bool {
        matches!(self, ReplicaState::Running | ReplicaState::Revealing(_))
    }

    /// Still counts toward the task's replicas.
    fn is_live(&self) -> bool {
        matches!(
            self,
            ReplicaState::Running
                | ReplicaState::Committed(_)
                | ReplicaState::Revealing(_)
                | ReplicaState::Revealed(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub index: u32,
    pub state: TaskState,
    /// Replicas whose outcomes are compared.
    pub needed: u8,
    pub replicas: Vec<Replica>,
}

/// A job and everything the hub knows of it (what is persisted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub spec: JobSpec,
    pub submitter: Digest,
    pub submitted_ms: u64,
    pub ended_ms: Option<u64>,
    pub state: JobState,
    pub tasks: Vec<Task>,
    /// What happened, oldest first.
    pub log: VecDeque<String>,
    pub log_dropped: u64,
}

impl Job {
    /// Tasks that ran on fewer workers than the job asked for: adaptive
    /// replication let a worker with a verified record run them alone.
    pub fn tasks_on_fewer_replicas(&self) -> u32 {
        let Replication::Adaptive(asked) = self.spec.replication else {
            return 0;
        };
        self.tasks.iter().filter(|task| task.needed < asked).count() as u32
    }

    /// Tasks accepted (and stored), of all.
    pub fn progress(&self) -> (usize, usize) {
        let done = self
            .tasks
            .iter()
            .filter(|task| matches!(task.state, TaskState::Accepted { stored: true, .. }))
            .count();
        (done, self.tasks.len())
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask `worker` to run the task; its answer is
    /// [`Scheduler::committed`] or [`Scheduler::run_failed`].
    Run { worker: NodeId, task: TaskSpec },
    /// Ask `worker` for the outcome it committed to:
    /// [`Scheduler::revealed`] (or [`Scheduler::run_failed`]).
    Reveal {
        worker: NodeId,
        job: JobId,
        index: u32,
    },
    /// Tell `worker` the replica is no longer wanted.
    Cancel {
        worker: NodeId,
        job: JobId,
        index: u32,
    },
    /// Fetch the outcome's output blobs from one of `holders`, then call
    /// [`Scheduler::output_stored`] (or [`Scheduler::output_lost`]).
    Store {
        job: JobId,
        index: u32,
        outcome: Outcome,
        holders: Vec<NodeId>,
    },
    /// The job ended (done, failed or cancelled).
    Ended { job: JobId },
}

/// Why a submission was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("the hub already runs {0} jobs; try again when some have ended")]
    Full(usize),
    #[error("a job with this id exists")]
    Duplicate,
}

#[derive(Debug, Clone, Copy)]
struct WorkerSlots {
    id: NodeId,
    slots: u32,
    running: u32,
}

/// The hub's scheduler.
#[derive(Debug)]
pub struct Scheduler {
    config: Config,
    jobs: BTreeMap<JobId, Job>,
    /// Jobs not ended, in submission order.
    active: Vec<JobId>,
    /// Tasks that need more replicas placed.
    waiting: VecDeque<(JobId, u32)>,
    waiting_set: BTreeSet<(JobId, u32)>,
    workers: BTreeMap<Digest, WorkerSlots>,
    reputation: HashMap<Digest, Reputation>,
    known: HashMap<Digest, NodeId>,
    /// After a restart: what to ask each worker again once it is back.
    resume: HashMap<Digest, Vec<Resume>>,
    /// Workers that just failed for a passing reason, and until when
    /// nothing new is placed on them.
    cooling: HashMap<Digest, u64>,
    actions: VecDeque<Action>,
    dirty_jobs: BTreeSet<JobId>,
    dirty_workers: BTreeSet<Digest>,
    /// Ended jobs, oldest first, and those forgotten since the driver
    /// last asked.
    ended: VecDeque<JobId>,
    forgotten: Vec<JobId>,
}

/// The node id of a worker digest: from the cache of ids seen, else
/// validated (a persisted job read back); `None` only for a corrupt one.
fn node(known: &mut HashMap<Digest, NodeId>, id: &Digest) -> Option<NodeId> {
    if let Some(node) = known.get(id) {
        return Some(*node);
    }
    let node = NodeId::from_bytes(id.as_bytes()).ok()?;
    if known.len() < KNOWN_IDS_MAX {
        known.insert(*id, node);
    }
    Some(node)
}

/// How long a worker that failed for a passing reason gets no new work.
const COOLING_MS: u64 = 1000;

/// Worker ids kept decoded.
const KNOWN_IDS_MAX: usize = 65_536;

/// A worker as logs name it: its node id's short form.
fn short(id: &Digest) -> String {
    NodeId::from_bytes(&id.0)
        .map(|node| node.short())
        .unwrap_or_else(|_| fogwire_identity::short_form(&id.to_hex()))
}

impl Scheduler {
    pub fn new(config: Config) -> Scheduler {
        Scheduler {
            config,
            jobs: BTreeMap::new(),
            active: Vec::new(),
            waiting: VecDeque::new(),
            waiting_set: BTreeSet::new(),
            workers: BTreeMap::new(),
            reputation: HashMap::new(),
            known: HashMap::new(),
            resume: HashMap::new(),
            cooling: HashMap::new(),
            actions: VecDeque::new(),
            dirty_jobs: BTreeSet::new(),
            dirty_workers: BTreeSet::new(),
            ended: VecDeque::new(),
            forgotten: Vec::new(),
        }
    }

    /// Picks up where a previous run left off: jobs and reputations as
    /// persisted. Replicas that were running are asked again (a worker
    /// that finished answers with its commitment at once); replicas that
    /// were revealing are asked to reveal again.
    pub fn restore(
        config: Config,
        jobs: Vec<Job>,
        reputation: Vec<(Digest, Reputation)>,
        now_ms: u64,
    ) -> Scheduler {
        let mut scheduler = Scheduler::new(config);
        scheduler.reputation = reputation.into_iter().collect();
        let mut ended: Vec<(u64, JobId)> = jobs
            .iter()
            .filter(|job| job.state.is_ended())
            .map(|job| (job.ended_ms.unwrap_or(0), job.id))
            .collect();
        ended.sort();
        scheduler.ended = ended.into_iter().map(|(_, id)| id).collect();
        for mut job in jobs {
            if !job.state.is_ended() {
                scheduler.active.push(job.id);
                let reveal_ms = now_ms + scheduler.config.reveal_timeout_ms;
                let run_ms =
                    now_ms + job.spec.limits.wall_time_ms + scheduler.config.commit_grace_ms;
                for task in &mut job.tasks {
                    for replica in &mut task.replicas {
                        match replica.state {
                            ReplicaState::Running => {
                                replica.deadline_ms = run_ms;
                                scheduler
                                    .resume
                                    .entry(replica.worker)
                                    .or_default()
                                    .push(Resume::Run(task_spec(&job.id, &job.spec, task.index)));
                            }
                            ReplicaState::Revealing(_) => {
                                replica.deadline_ms = reveal_ms;
                                scheduler
                                    .resume
                                    .entry(replica.worker)
                                    .or_default()
                                    .push(Resume::Reveal(job.id, task.index));
                            }
                            _ => {}
                        }
                    }
                }
                job.log
                    .push_back("the hub restarted: resuming this job".to_owned());
            }
            scheduler.jobs.insert(job.id, job);
        }
        for id in scheduler.active.clone() {
            let count = scheduler.jobs[&id].tasks.len() as u32;
            for index in 0..count {
                scheduler.advance(id, index, now_ms);
            }
        }
        scheduler.forget_old();
        scheduler
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn job(&self, id: &JobId) -> Option<&Job> {
        self.jobs.get(id)
    }

    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    /// Finds a job by the first hex digits of its id.
    pub fn find(&self, prefix: &str) -> Vec<JobId> {
        let prefix = fogwire_identity::prefix_of(prefix).to_ascii_lowercase();
        self.jobs
            .keys()
            .filter(|id| id.0.to_hex().starts_with(&prefix))
            .copied()
            .collect()
    }

    /// Workers known, with their slots, replicas running and record.
    pub fn workers(&self) -> Vec<(NodeId, u32, u32, Reputation)> {
        self.workers
            .iter()
            .map(|(id, slots)| {
                (
                    slots.id,
                    slots.slots,
                    slots.running,
                    self.reputation.get(id).copied().unwrap_or_default(),
                )
            })
            .collect()
    }

    pub fn reputation(&self, worker: &NodeId) -> Reputation {
        self.reputation
            .get(&Digest(*worker.as_bytes()))
            .copied()
            .unwrap_or_default()
    }

    /// Jobs changed since the last call, for the driver to persist.
    pub fn take_dirty_jobs(&mut self) -> Vec<JobId> {
        std::mem::take(&mut self.dirty_jobs).into_iter().collect()
    }

    /// Jobs forgotten since the last call (the oldest ended ones beyond
    /// [`Config::ended_jobs_max`]), for the driver to delete.
    pub fn take_forgotten_jobs(&mut self) -> Vec<JobId> {
        std::mem::take(&mut self.forgotten)
    }

    fn forget_old(&mut self) {
        while self.ended.len() > self.config.ended_jobs_max {
            let Some(id) = self.ended.pop_front() else {
                break;
            };
            self.jobs.remove(&id);
            self.dirty_jobs.remove(&id);
            self.forgotten.push(id);
        }
    }

    /// Workers whose reputation changed since the last call.
    pub fn take_dirty_workers(&mut self) -> Vec<(Digest, Reputation)> {
        std::mem::take(&mut self.dirty_workers)
            .into_iter()
            .map(|id| (id, self.reputation.get(&id).copied().unwrap_or_default()))
            .collect()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// A worker is reachable and can run `slots` replicas at once.
    pub fn worker_up(&mut self, worker: NodeId, slots: u32, now_ms: u64) {
        let id = Digest(*worker.as_bytes());
        self.known.insert(id, worker);
        let entry = self.workers.entry(id).or_insert(WorkerSlots {
            id: worker,
            slots,
            running: 0,
        });
        entry.slots = slots.max(1);
        if let Some(resumed) = self.resume.remove(&id) {
            for resume in resumed {
                self.actions.push_back(match resume {
                    Resume::Run(task) => {
                        if let Some(slots) = self.workers.get_mut(&id) {
                            slots.running += 1;
                        }
                        Action::Run { worker, task }
                    }
                    Resume::Reveal(job, index) => Action::Reveal { worker, job, index },
                });
            }
        }
        self.place(now_ms);
    }

    /// A worker vanished: its replicas are silent and placed elsewhere.
    pub fn worker_down(&mut self, worker: NodeId, now_ms: u64) {
        let id = Digest(*worker.as_bytes());
        if self.workers.remove(&id).is_none() {
            return;
        }
        let mut touched = Vec::new();
        for job_id in &self.active {
            let Some(job) = self.jobs.get_mut(job_id) else {
                continue;
            };
            for task in &mut job.tasks {
                for replica in &mut task.replicas {
                    if replica.worker == id
                        && matches!(
                            replica.state,
                            ReplicaState::Running
                                | ReplicaState::Committed(_)
                                | ReplicaState::Revealing(_)
                        )
                    {
                        replica.state = ReplicaState::Silent;
                        touched.push((*job_id, task.index));
                    }
                }
            }
        }
        for (job, index) in touched {
            self.note_silent(job, index, id, "its worker vanished");
            self.advance(job, index, now_ms);
        }
        self.place(now_ms);
    }

    /// A new job. Its id comes from the driver ([`JobId::derive`]).
    pub fn submit(
        &mut self,
        id: JobId,
        spec: JobSpec,
        submitter: NodeId,
        now_ms: u64,
    ) -> Result<(), SubmitError> {
        spec.validate()?;
        if self.active.len() >= self.config.jobs_active_max {
            return Err(SubmitError::Full(self.active.len()));
        }
        if self.jobs.contains_key(&id) {
            return Err(SubmitError::Duplicate);
        }
        let needed = spec.replication.replicas(self.workers.len());
        let tasks = (0..spec.split)
            .map(|index| Task {
                index,
                state: TaskState::Running,
                needed,
                replicas: Vec::new(),
            })
            .collect();
        let mut job = Job {
            id,
            spec,
            submitter: Digest(*submitter.as_bytes()),
            submitted_ms: now_ms,
            ended_ms: None,
            state: JobState::Running,
            tasks,
            log: VecDeque::new(),
            log_dropped: 0,
        };
        let line = format!(
            "submitted: {} task(s), {} replica(s) each ({:?}), {} worker(s) known",
            job.spec.split,
            needed,
            job.spec.replication,
            self.workers.len()
        );
        push_log(&mut job, line, self.config.log_lines_max);
        let split = job.spec.split;
        self.jobs.insert(id, job);
        self.active.push(id);
        self.dirty_jobs.insert(id);
        for index in 0..split {
            self.enqueue(id, index);
        }
        self.place(now_ms);
        Ok(())
    }

    /// The buyer cancelled the job.
    pub fn cancel(&mut self, id: &JobId, now_ms: u64) -> bool {
        match self.jobs.get(id) {
            Some(job) if !job.state.is_ended() => {
                self.end(
                    *id,
                    JobState::Cancelled,
                    "cancelled by the buyer".to_owned(),
                    now_ms,
                );
                true
            }
            _ => false,
        }
    }

    /// A worker committed to an outcome of the task.
    pub fn committed(
        &mut self,
        worker: NodeId,
        job: JobId,
        index: u32,
        commitment: Commitment,
        now_ms: u64,
    ) {
        let id = Digest(*worker.as_bytes());
        let Some(replica) = self.replica_mut(&job, index, &id) else {
            return;
        };
        if replica.state != ReplicaState::Running {
            return;
        }
        replica.state = ReplicaState::Committed(commitment);
        self.release(&id);
        self.log(job, format!("task {index}: {} committed", short(&id)));
        self.advance(job, index, now_ms);
        self.place(now_ms);
    }

    /// A worker revealed its outcome.
    pub fn revealed(
        &mut self,
        worker: NodeId,
        job: JobId,
        index: u32,
        reveal: Reveal,
        now_ms: u64,
    ) {
        let id = Digest(*worker.as_bytes());
        let Some(replica) = self.replica_mut(&job, index, &id) else {
            return;
        };
        let ReplicaState::Revealing(commitment) = replica.state else {
            return;
        };
        if reveal.matches(&commitment, worker.as_bytes(), &job, index) {
            replica.state = ReplicaState::Revealed(reveal);
        } else {
            replica.state = ReplicaState::Dissented;
            self.punish(&id);
            self.log(
                job,
                format!(
                    "task {index}: {} revealed an outcome it had not committed to: reputation lowered",
                    short(&id)
                ),
            );
        }
        self.advance(job, index, now_ms);
        self.place(now_ms);
    }

    /// A worker could not run (or reveal) the task: it is placed
    /// elsewhere — or, if the failure was `transient` (unreachable, busy,
    /// stopping), on the same worker again too. This costs no reputation
    /// (it said so in time).
    pub fn run_failed(
        &mut self,
        worker: NodeId,
        job: JobId,
        index: u32,
        reason: &str,
        transient: bool,
        now_ms: u64,
    ) {
        let id = Digest(*worker.as_bytes());
        let Some(replica) = self.replica_mut(&job, index, &id) else {
            return;
        };
        let was_running = replica.state == ReplicaState::Running;
        if !matches!(
            replica.state,
            ReplicaState::Running | ReplicaState::Committed(_) | ReplicaState::Revealing(_)
        ) {
            return;
        }
        replica.state = if transient {
            ReplicaState::Interrupted(reason.to_owned())
        } else {
            ReplicaState::Failed(reason.to_owned())
        };
        if transient {
            self.cooling.insert(id, now_ms + COOLING_MS);
        }
        if was_running {
            self.release(&id);
        }
        self.log(
            job,
            format!("task {index}: {} could not run it: {reason}", short(&id)),
        );
        self.advance(job, index, now_ms);
        self.place(now_ms);
    }

    /// The hub holds the accepted outcome's output blobs.
    pub fn output_stored(&mut self, job: JobId, index: u32, now_ms: u64) {
        let Some(task) = self.task_mut(&job, index) else {
            return;
        };
        let mut failure = None;
        if let TaskState::Accepted {
            stored,
            outcome,
            agreed,
        } = &mut task.state
        {
            *stored = true;
            if !outcome.status.succeeded() {
                failure = Some(format!(
                    "task {index}: its program {} ({} of {} replica(s) agree: the program failed, not the workers)",
                    outcome.status,
                    agreed.len(),
                    task.replicas.len()
                ));
            }
        }
        self.dirty_jobs.insert(job);
        // The program failed (the quorum agrees): the job fails, with
        // the task's output kept, and its other tasks stop.
        if let Some(reason) = failure {
            let line = format!("failed: {reason}");
            self.end(job, JobState::Failed(reason), line, now_ms);
            return;
        }
        self.check_done(job, now_ms);
    }

    /// No holder could provide the accepted outcome's output.
    pub fn output_lost(&mut self, job: JobId, index: u32, reason: &str, now_ms: u64) {
        let Some(task) = self.task_mut(&job, index) else {
            return;
        };
        task.state = TaskState::Failed(format!("its output could not be fetched: {reason}"));
        self.end(
            job,
            JobState::Failed(format!(
                "task {index}: its output could not be fetched: {reason}"
            )),
            format!("task {index}: output lost: {reason}"),
            now_ms,
        );
    }

    /// When [`Scheduler::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut next: Option<u64> = None;
        for id in &self.active {
            let Some(job) = self.jobs.get(id) else {
                continue;
            };
            let mut earliest = job.submitted_ms + job.spec.deadline_ms;
            for task in &job.tasks {
                if !matches!(task.state, TaskState::Running) {
                    continue;
                }
                for replica in &task.replicas {
                    if replica.state.has_deadline() {
                        earliest = earliest.min(replica.deadline_ms);
                    }
                }
            }
            next = Some(next.map_or(earliest, |n| n.min(earliest)));
        }
        if !self.waiting.is_empty()
            && let Some(cooled) = self.cooling.values().min()
        {
            next = Some(next.map_or(*cooled, |n| n.min(*cooled)));
        }
        next
    }

    /// Ends jobs past their deadline and gives up on replicas past theirs.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.cooling.retain(|_, until| *until > now_ms);
        let mut late_jobs = Vec::new();
        let mut late_replicas = Vec::new();
        for id in &self.active {
            let Some(job) = self.jobs.get(id) else {
                continue;
            };
            if now_ms >= job.submitted_ms + job.spec.deadline_ms {
                late_jobs.push(*id);
                continue;
            }
            for task in &job.tasks {
                if !matches!(task.state, TaskState::Running) {
                    continue;
                }
                for replica in &task.replicas {
                    if replica.state.has_deadline() && now_ms >= replica.deadline_ms {
                        late_replicas.push((*id, task.index, replica.worker));
                    }
                }
            }
        }
        for id in late_jobs {
            let (done, all) = self.jobs[&id].progress();
            self.end(
                id,
                JobState::Failed(format!(
                    "the deadline passed with {done} of {all} task(s) done"
                )),
                "deadline passed".to_owned(),
                now_ms,
            );
        }
        for (job, index, worker) in late_replicas {
            let Some(replica) = self.replica_mut(&job, index, &worker) else {
                continue;
            };
            let was_running = replica.state == ReplicaState::Running;
            replica.state = ReplicaState::Silent;
            if was_running {
                self.release(&worker);
            }
            self.ask(&worker, |worker| Action::Cancel { worker, job, index });
            self.note_silent(job, index, worker, "it missed its deadline");
            self.advance(job, index, now_ms);
        }
        self.place(now_ms);
    }

    fn note_silent(&mut self, job: JobId, index: u32, worker: Digest, why: &str) {
        let record = self.reputation.entry(worker).or_default();
        record.silent += 1;
        record.streak = 0;
        self.dirty_workers.insert(worker);
        self.log(
            job,
            format!(
                "task {index}: {} went silent ({why}): placing it elsewhere",
                short(&worker)
            ),
        );
    }

    fn punish(&mut self, worker: &Digest) {
        let record = self.reputation.entry(*worker).or_default();
        record.dissented += 1;
        record.streak = 0;
        self.dirty_workers.insert(*worker);
    }

    /// Queues an action for `worker` (skipped if its id is corrupt).
    fn ask(&mut self, worker: &Digest, action: impl FnOnce(NodeId) -> Action) {
        if let Some(id) = node(&mut self.known, worker) {
            self.actions.push_back(action(id));
        }
    }

    fn release(&mut self, worker: &Digest) {
        if let Some(slots) = self.workers.get_mut(worker) {
            slots.running = slots.running.saturating_sub(1);
        }
    }

    /// Adds a line to a job's log (what the hub did after it ended:
    /// its payment, say).
    pub fn note(&mut self, job: JobId, line: String) {
        self.log(job, line);
    }

    fn log(&mut self, job: JobId, line: String) {
        let max = self.config.log_lines_max;
        if let Some(job) = self.jobs.get_mut(&job) {
            push_log(job, line, max);
        }
        self.dirty_jobs.insert(job);
    }

    fn task_mut(&mut self, job: &JobId, index: u32) -> Option<&mut Task> {
        let job = self.jobs.get_mut(job)?;
        if job.state.is_ended() {
            return None;
        }
        self.dirty_jobs.insert(job.id);
        job.tasks.get_mut(index as usize)
    }

    /// The live replica of `worker` for the task.
    fn replica_mut(&mut self, job: &JobId, index: u32, worker: &Digest) -> Option<&mut Replica> {
        let task = self.task_mut(job, index)?;
        if !matches!(task.state, TaskState::Running) {
            return None;
        }
        task.replicas
            .iter_mut()
            .find(|replica| replica.worker == *worker && replica.state.is_live())
    }

    fn enqueue(&mut self, job: JobId, index: u32) {
        if self.waiting_set.insert((job, index)) {
            self.waiting.push_back((job, index));
        }
    }

    /// Moves a task along after any change to its replicas.
    fn advance(&mut self, job_id: JobId, index: u32, now_ms: u64) {
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        if job.state.is_ended() {
            return;
        }
        let Some(task) = job.tasks.get(index as usize) else {
            return;
        };
        if !matches!(task.state, TaskState::Running) {
            return;
        }
        let count =
            |f: fn(&ReplicaState) -> bool| task.replicas.iter().filter(|r| f(&r.state)).count();
        let running = count(|s| matches!(s, ReplicaState::Running));
        let committed = count(|s| matches!(s, ReplicaState::Committed(_)));
        let revealing = count(|s| matches!(s, ReplicaState::Revealing(_)));
        let revealed = count(|s| matches!(s, ReplicaState::Revealed(_)));
        let live = running + committed + revealing + revealed;
        let needed = task.needed as usize;
        if live < needed {
            let used = task.replicas.len();
            let tried = tried_workers(task);
            let untried = self.workers.keys().filter(|w| !tried.contains(w)).count();
            let last_failure = task.replicas.iter().rev().find_map(|r| match &r.state {
                ReplicaState::Failed(why) | ReplicaState::Interrupted(why) => {
                    Some(format!("; the last worker said: {why}"))
                }
                ReplicaState::Silent => Some("; the last worker went silent".to_owned()),
                _ => None,
            });
            let finished = revealed + committed + revealing;
            if used >= needed + self.config.spare_attempts as usize {
                let reason = format!(
                    "{used} replicas were tried and too few finished ({finished} of {needed}){}",
                    last_failure.unwrap_or_default()
                );
                self.fail_task(job_id, index, reason, now_ms);
            } else if used > live && live + untried < needed {
                // Replicas were lost and no worker is left to try.
                let reason = format!(
                    "every worker known was tried and too few finished ({finished} of {needed}){}",
                    last_failure.unwrap_or_default()
                );
                self.fail_task(job_id, index, reason, now_ms);
            } else {
                self.enqueue(job_id, index);
            }
            return;
        }
        if running == 0 && committed > 0 {
            // Every replica has committed: now, and only now, reveal.
            let deadline = now_ms + self.config.reveal_timeout_ms;
            let mut asks = Vec::new();
            if let Some(task) = self.task_mut(&job_id, index) {
                for replica in &mut task.replicas {
                    if let ReplicaState::Committed(commitment) = replica.state {
                        replica.state = ReplicaState::Revealing(commitment);
                        replica.deadline_ms = deadline;
                        asks.push(replica.worker);
                    }
                }
            }
            for worker in asks {
                self.ask(&worker, |worker| Action::Reveal {
                    worker,
                    job: job_id,
                    index,
                });
            }
            return;
        }
        if running + committed + revealing == 0 && revealed >= needed {
            self.decide(job_id, index, now_ms);
        }
    }

    /// Every live replica has revealed: accept the majority's outcome, or
    /// ask for more replicas.
    fn decide(&mut self, job_id: JobId, index: u32, now_ms: u64) {
        let Some(task) = self
            .jobs
            .get(&job_id)
            .and_then(|job| job.tasks.get(index as usize))
        else {
            return;
        };
        let mut groups: BTreeMap<Digest, Vec<usize>> = BTreeMap::new();
        let mut outcomes: BTreeMap<Digest, Outcome> = BTreeMap::new();
        let mut revealed = 0;
        for (position, replica) in task.replicas.iter().enumerate() {
            if let ReplicaState::Revealed(reveal) = &replica.state {
                let digest = reveal.outcome.digest();
                groups.entry(digest).or_default().push(position);
                outcomes
                    .entry(digest)
                    .or_insert_with(|| reveal.outcome.clone());
                revealed += 1;
            }
        }
        let Some((winner, majority)) = groups
            .iter()
            .max_by_key(|(_, members)| members.len())
            .map(|(digest, members)| (*digest, members.clone()))
        else {
            return;
        };
        if majority.len() * 2 <= revealed {
            // No majority: more replicas, if any can be had.
            let used: BTreeSet<Digest> = task.replicas.iter().map(|r| r.worker).collect();
            let free = self.workers.keys().filter(|w| !used.contains(w)).count();
            let grow = self.config.replicas_on_disagreement as usize;
            let needed = task.needed as usize + grow;
            if needed > REPLICAS_MAX as usize || free == 0 {
                self.fail_task(
                    job_id,
                    index,
                    format!(
                        "its {revealed} replicas disagree with no majority, and no more can be added"
                    ),
                    now_ms,
                );
                return;
            }
            if let Some(task) = self.task_mut(&job_id, index) {
                task.needed = needed as u8;
            }
            self.log(
                job_id,
                format!(
                    "task {index}: {revealed} replicas disagree with no majority: adding {grow} more"
                ),
            );
            self.enqueue(job_id, index);
            self.place(now_ms);
            return;
        }
        let outcome = outcomes.remove(&winner).unwrap_or_else(unreachable_outcome);
        let mut agreed = Vec::new();
        let mut dissenters = Vec::new();
        if let Some(task) = self.task_mut(&job_id, index) {
            for (position, replica) in task.replicas.iter_mut().enumerate() {
                if matches!(replica.state, ReplicaState::Revealed(_)) {
                    if majority.contains(&position) {
                        replica.state = ReplicaState::Agreed;
                        agreed.push(replica.worker);
                    } else {
                        replica.state = ReplicaState::Dissented;
                        dissenters.push(replica.worker);
                    }
                }
            }
            task.state = TaskState::Accepted {
                outcome: outcome.clone(),
                agreed: agreed.clone(),
                stored: false,
            };
        }
        // Only an outcome another worker confirmed builds a record: a
        // worker that ran a task alone proved nothing, so it cannot earn
        // the trust to run alone again by running alone.
        let verified = agreed.len() >= 2;
        for worker in agreed.iter().filter(|_| verified) {
            let record = self.reputation.entry(*worker).or_default();
            record.agreed += 1;
            record.streak = record.streak.saturating_add(1);
            self.dirty_workers.insert(*worker);
        }
        for worker in &dissenters {
            self.punish(worker);
            self.log(
                job_id,
                format!(
                    "task {index}: {} returned a different outcome than the majority: caught, reputation lowered",
                    short(worker)
                ),
            );
        }
        self.log(
            job_id,
            format!(
                "task {index}: accepted ({} of {revealed} agree, {})",
                agreed.len(),
                outcome.status
            ),
        );
        let holders = agreed
            .iter()
            .filter_map(|worker| node(&mut self.known, worker))
            .collect();
        self.actions.push_back(Action::Store {
            job: job_id,
            index,
            outcome,
            holders,
        });
    }

    fn fail_task(&mut self, job_id: JobId, index: u32, reason: String, now_ms: u64) {
        if let Some(task) = self.task_mut(&job_id, index) {
            task.state = TaskState::Failed(reason.clone());
        }
        self.end(
            job_id,
            JobState::Failed(format!("task {index}: {reason}")),
            format!("task {index} failed: {reason}"),
            now_ms,
        );
    }

    fn check_done(&mut self, job_id: JobId, now_ms: u64) {
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        if job.state.is_ended() {
            return;
        }
        let (done, all) = job.progress();
        if done == all {
            self.end(
                job_id,
                JobState::Done,
                format!("done: {all} of {all} task(s) accepted"),
                now_ms,
            );
        }
    }

    /// Ends a job: cancels its replicas still in flight.
    fn end(&mut self, job_id: JobId, state: JobState, line: String, now_ms: u64) {
        let mut cancels = Vec::new();
        if let Some(job) = self.jobs.get_mut(&job_id) {
            if job.state.is_ended() {
                return;
            }
            job.state = state;
            job.ended_ms = Some(now_ms);
            for task in &mut job.tasks {
                for replica in &mut task.replicas {
                    let running = replica.state == ReplicaState::Running;
                    if matches!(
                        replica.state,
                        ReplicaState::Running
                            | ReplicaState::Committed(_)
                            | ReplicaState::Revealing(_)
                    ) {
                        replica.state = ReplicaState::Cancelled;
                        cancels.push((replica.worker, task.index, running));
                    }
                }
            }
        }
        self.log(job_id, line);
        for (worker, index, running) in cancels {
            if running {
                self.release(&worker);
            }
            self.ask(&worker, |worker| Action::Cancel {
                worker,
                job: job_id,
                index,
            });
        }
        self.active.retain(|id| *id != job_id);
        self.actions.push_back(Action::Ended { job: job_id });
        self.ended.push_back(job_id);
        self.forget_old();
        self.place(now_ms);
    }

    /// Places waiting tasks on workers with free slots.
    fn place(&mut self, now_ms: u64) {
        let mut deferred = Vec::new();
        while let Some((job_id, index)) = self.waiting.pop_front() {
            self.waiting_set.remove(&(job_id, index));
            match self.place_one(job_id, index, now_ms) {
                Placement::Done | Placement::Gone => {}
                Placement::NoWorkerForThisTask => deferred.push((job_id, index)),
                Placement::NoSlots => {
                    deferred.push((job_id, index));
                    break;
                }
            }
        }
        // Tasks that could not be placed wait, in their order, ahead of
        // those behind them.
        for item in deferred.into_iter().rev() {
            if self.waiting_set.insert(item) {
                self.waiting.push_front(item);
            }
        }
    }

    fn place_one(&mut self, job_id: JobId, index: u32, now_ms: u64) -> Placement {
        let Some(job) = self.jobs.get(&job_id) else {
            return Placement::Gone;
        };
        if job.state.is_ended() {
            return Placement::Gone;
        }
        let Some(task) = job.tasks.get(index as usize) else {
            return Placement::Gone;
        };
        if !matches!(task.state, TaskState::Running) {
            return Placement::Gone;
        }
        let live = task.replicas.iter().filter(|r| r.state.is_live()).count();
        let mut missing = (task.needed as usize).saturating_sub(live);
        if missing == 0 {
            return Placement::Done;
        }
        let used = tried_workers(task);
        let mut candidates: Vec<(Digest, u32, u32)> = self
            .workers
            .iter()
            .filter(|(id, slots)| {
                slots.running < slots.slots
                    && !used.contains(id)
                    && self.cooling.get(*id).is_none_or(|until| *until <= now_ms)
            })
            .map(|(id, slots)| (*id, slots.running, slots.slots))
            .collect();
        if candidates.is_empty() {
            let any_free = self.workers.values().any(|s| s.running < s.slots);
            return if any_free {
                Placement::NoWorkerForThisTask
            } else {
                Placement::NoSlots
            };
        }
        // Best record first, then the least loaded; ties broken by a hash
        // of worker and task so that work spreads.
        let reputation = &self.reputation;
        candidates.sort_by(|a, b| {
            let score = |id: &Digest| reputation.get(id).copied().unwrap_or_default().score();
            let load = |c: &(Digest, u32, u32)| c.1 as f64 / c.2 as f64;
            score(&b.0)
                .total_cmp(&score(&a.0))
                .then(load(a).total_cmp(&load(b)))
                .then_with(|| spread(&a.0, &job_id, index).cmp(&spread(&b.0, &job_id, index)))
        });
        let first_placement = task.replicas.is_empty();
        let mut needed = task.needed;
        let mut reduced = None;
        if first_placement
            && let Replication::Adaptive(n) = job.spec.replication
            && n > 1
        {
            let best = self
                .reputation
                .get(&candidates[0].0)
                .copied()
                .unwrap_or_default();
            if best.streak >= self.config.trusted_streak
                && !spot_check(&job_id, index, self.config.spot_checks_per_256)
            {
                needed = 1;
                missing = 1;
                reduced = Some(format!(
                    "task {index}: adaptive replication: runs on {} alone, not {n} workers (its last {} results were each confirmed by other workers, and this task was not drawn for a spot check)",
                    short(&candidates[0].0),
                    best.streak
                ));
            }
        }
        let spec = task_spec(&job_id, &job.spec, index);
        let deadline = now_ms + job.spec.limits.wall_time_ms + self.config.commit_grace_ms;
        let chosen: Vec<Digest> = candidates.iter().take(missing).map(|c| c.0).collect();
        let short_of = missing - chosen.len();
        let Some(task) = self.task_mut(&job_id, index) else {
            return Placement::Gone;
        };
        task.needed = needed;
        for worker in &chosen {
            task.replicas.push(Replica {
                worker: *worker,
                state: ReplicaState::Running,
                deadline_ms: deadline,
            });
        }
        for worker in &chosen {
            if let Some(slots) = self.workers.get_mut(worker) {
                slots.running += 1;
            }
            self.ask(worker, |worker| Action::Run {
                worker,
                task: spec.clone(),
            });
        }
        let names: Vec<String> = chosen.iter().map(short).collect();
        self.log(
            job_id,
            format!("task {index}: placed on {}", names.join(", ")),
        );
        if let Some(line) = reduced {
            self.log(job_id, line);
        }
        if short_of > 0 {
            Placement::NoWorkerForThisTask
        } else {
            Placement::Done
        }
    }
}

/// A call to make again once its worker is back (after a restart).
#[derive(Debug)]
enum Resume {
    Run(TaskSpec),
    Reveal(JobId, u32),
}

enum Placement {
    Done,
    Gone,
    /// Every worker with a free slot already ran this task.
    NoWorkerForThisTask,
    /// No worker has a free slot.
    NoSlots,
}

/// Workers a task may not go to again: every one it was placed on, but
/// for those interrupted (and not placed again since).
fn tried_workers(task: &Task) -> BTreeSet<Digest> {
    task.replicas
        .iter()
        .filter(|r| !matches!(r.state, ReplicaState::Interrupted(_)))
        .map(|r| r.worker)
        .collect()
}

fn push_log(job: &mut Job, line: String, max: usize) {
    if job.log.len() >= max {
        job.log.pop_front();
        job.log_dropped += 1;
    }
    job.log.push_back(line);
}

fn unreachable_outcome() -> Outcome {
    // `winner` is a key of `outcomes` by construction.
    Outcome {
        status: crate::ExitStatus::Trapped("internal: outcome missing".to_owned()),
        stdout: Digest::default(),
        stderr: Digest::default(),
        fuel_used: 0,
    }
}

/// The task as worker sees it.
pub fn task_spec(job: &JobId, spec: &JobSpec, index: u32) -> TaskSpec {
    TaskSpec {
        job: *job,
        index,
        count: spec.split,
        runtime: spec.runtime,
        program: spec.program,
        inputs: spec.inputs.clone(),
        args: spec.args.clone(),
        limits: spec.limits,
        network: spec.network,
    }
}

fn spread(worker: &Digest, job: &JobId, index: u32) -> [u8; 8] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(worker.as_bytes());
    hasher.update(job.0.as_bytes());
    hasher.update(&index.to_le_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    out
}

/// Whether a task of a trusted worker is replicated in full anyway.
fn spot_check(job: &JobId, index: u32, per_256: u8) -> bool {
    let mut hasher = blake3::Hasher::new_derive_key("fogwire compute spot check v1");
    hasher.update(job.0.as_bytes());
    hasher.update(&index.to_le_bytes());
    hasher.finalize().as_bytes()[0] < per_256
}

#[cfg(test)]
mod tests;
