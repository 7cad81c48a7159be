//! The scheduler driven by simulated workers: honest ones compute the
//! true outcome, cheats a wrong one, and silent ones never answer.

use std::collections::HashMap;

use fogwire_identity::{Keypair, NodeId};

use super::*;
use crate::{ExitStatus, Replication};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Behaviour {
    Honest,
    Cheat,
    Silent,
    /// Reveals an outcome other than the one it committed to.
    Liar,
    /// Runs and commits, then never reveals (it learns nothing from the
    /// others' commitments, and holds the task up if it can).
    NeverReveals,
}

struct Sim {
    scheduler: Scheduler,
    now: u64,
    workers: HashMap<NodeId, Behaviour>,
    order: Vec<NodeId>,
    runs: HashMap<(NodeId, JobId, u32), Reveal>,
    ran: Vec<(NodeId, u32)>,
    stored: Vec<(u32, Outcome)>,
    ended: Vec<JobId>,
    cancels: usize,
    /// The task whose program traps (on every worker).
    trapping: Option<u32>,
    /// Replicas run when each job ended.
    ran_when_ended: Vec<usize>,
}

fn true_outcome(task: &TaskSpec) -> Outcome {
    Outcome {
        status: ExitStatus::Exited(0),
        stdout: Digest::of(&task.index.to_le_bytes()),
        stderr: Digest::of(b""),
        fuel_used: 100 + task.index as u64,
    }
}

impl Sim {
    fn new(behaviours: &[Behaviour]) -> Sim {
        let mut sim = Sim {
            scheduler: Scheduler::new(Config::default()),
            now: 1_000,
            workers: HashMap::new(),
            order: Vec::new(),
            runs: HashMap::new(),
            ran: Vec::new(),
            stored: Vec::new(),
            ended: Vec::new(),
            cancels: 0,
            trapping: None,
            ran_when_ended: Vec::new(),
        };
        for (i, behaviour) in behaviours.iter().enumerate() {
            let id = Keypair::from_seed(&[i as u8 + 1; 32]).node_id();
            sim.workers.insert(id, *behaviour);
            sim.order.push(id);
            sim.scheduler.worker_up(id, 4, sim.now);
        }
        sim
    }

    fn submit(&mut self, spec: JobSpec) -> JobId {
        let id = JobId(Digest::of(&self.now.to_le_bytes()));
        let buyer = Keypair::from_seed(&[200; 32]).node_id();
        self.scheduler.submit(id, spec, buyer, self.now).unwrap();
        id
    }

    /// Carries out actions until there are none.
    fn drive(&mut self) {
        while let Some(action) = self.scheduler.poll_action() {
            match action {
                Action::Run { worker, task } => {
                    self.ran.push((worker, task.index));
                    let behaviour = self.workers[&worker];
                    if behaviour == Behaviour::Silent {
                        continue;
                    }
                    let mut outcome = true_outcome(&task);
                    if self.trapping == Some(task.index) {
                        outcome.status = ExitStatus::Trapped("unreachable".into());
                    }
                    if behaviour == Behaviour::Cheat {
                        outcome.stdout = Digest::of(b"made up");
                    }
                    let nonce = Digest::of(worker.as_bytes());
                    let commitment = Commitment::new(
                        worker.as_bytes(),
                        &task.job,
                        task.index,
                        &outcome.digest(),
                        &nonce,
                    );
                    if behaviour == Behaviour::Liar {
                        outcome.fuel_used += 1;
                    }
                    self.runs
                        .insert((worker, task.job, task.index), Reveal { outcome, nonce });
                    self.scheduler
                        .committed(worker, task.job, task.index, commitment, self.now);
                }
                Action::Reveal { worker, job, index } => {
                    if self.workers[&worker] == Behaviour::NeverReveals {
                        continue;
                    }
                    let reveal = self.runs[&(worker, job, index)].clone();
                    self.scheduler
                        .revealed(worker, job, index, reveal, self.now);
                }
                Action::Cancel { .. } => self.cancels += 1,
                Action::Store {
                    job,
                    index,
                    outcome,
                    ..
                } => {
                    self.stored.push((index, outcome));
                    self.scheduler.output_stored(job, index, self.now);
                }
                Action::Ended { job } => {
                    self.ended.push(job);
                    self.ran_when_ended.push(self.ran.len());
                }
            }
        }
    }

    fn advance_to(&mut self, ms: u64) {
        self.now = ms;
        self.scheduler.handle_timeout(self.now);
        self.drive();
    }

    fn state(&self, job: &JobId) -> JobState {
        self.scheduler.job(job).unwrap().state.clone()
    }

    fn reputation(&self, worker: usize) -> Reputation {
        self.scheduler.reputation(&self.order[worker])
    }
}

fn spec(replication: Replication, split: u32) -> JobSpec {
    let mut spec = JobSpec::wasm(Digest::of(b"module"));
    spec.replication = replication;
    spec.split = split;
    spec
}

#[test]
fn three_honest_replicas_agree_and_the_job_is_done() {
    let mut sim = Sim::new(&[Behaviour::Honest; 4]);
    let job = sim.submit(spec(Replication::Fixed(3), 5));
    sim.drive();
    assert_eq!(sim.state(&job), JobState::Done);
    assert_eq!(sim.ran.len(), 15);
    assert_eq!(sim.stored.len(), 5);
    for (index, outcome) in &sim.stored {
        assert_eq!(outcome.stdout, Digest::of(&index.to_le_bytes()));
    }
    let agreed: u64 = (0..4).map(|w| sim.reputation(w).agreed).sum();
    assert_eq!(agreed, 15);
    assert_eq!(sim.ended, vec![job]);
}

#[test]
fn a_cheater_is_outvoted_and_loses_reputation() {
    let mut sim = Sim::new(&[
        Behaviour::Cheat,
        Behaviour::Honest,
        Behaviour::Honest,
        Behaviour::Honest,
    ]);
    let job = sim.submit(spec(Replication::Fixed(3), 8));
    sim.drive();
    assert_eq!(sim.state(&job), JobState::Done);
    for (index, outcome) in &sim.stored {
        assert_eq!(
            outcome.stdout,
            Digest::of(&index.to_le_bytes()),
            "task {index}"
        );
    }
    let cheat = sim.reputation(0);
    assert!(cheat.dissented > 0, "{cheat:?}");
    assert_eq!(cheat.agreed, 0);
    let log = &sim.scheduler.job(&job).unwrap().log;
    assert!(log.iter().any(|line| line.contains("caught")), "{log:?}");
}

#[test]
fn a_worker_revealing_what_it_did_not_commit_to_is_caught() {
    let mut sim = Sim::new(&[
        Behaviour::Liar,
        Behaviour::Honest,
        Behaviour::Honest,
        Behaviour::Honest,
    ]);
    let job = sim.submit(spec(Replication::Fixed(3), 4));
    sim.drive();
    assert_eq!(sim.state(&job), JobState::Done);
    assert!(sim.reputation(0).dissented > 0);
    for (index, outcome) in &sim.stored {
        assert_eq!(
            outcome,
            &true_outcome(&TaskSpec {
                index: *index,
                ..scheduler_task(&job, &sim)
            })
        );
    }
}

fn scheduler_task(job: &JobId, sim: &Sim) -> TaskSpec {
    task_spec(job, &sim.scheduler.job(job).unwrap().spec, 0)
}

#[test]
fn two_of_three_cheating_alike_without_majority_gets_more_replicas() {
    // Two honest, one cheat, one more honest in reserve: with 2 needed,
    // a 1–1 split has no majority, so two more are added.
    let mut sim = Sim::new(&[
        Behaviour::Cheat,
        Behaviour::Honest,
        Behaviour::Honest,
        Behaviour::Honest,
    ]);
    let job = sim.submit(spec(Replication::Fixed(2), 1));
    sim.drive();
    assert_eq!(sim.state(&job), JobState::Done);
    let task = &sim.scheduler.job(&job).unwrap().tasks[0];
    if task.replicas.len() > 2 {
        assert_eq!(task.needed, 4);
        assert!(
            sim.scheduler
                .job(&job)
                .unwrap()
                .log
                .iter()
                .any(|l| l.contains("no majority"))
        );
    }
    assert_eq!(sim.stored[0].1.stdout, Digest::of(&0u32.to_le_bytes()));
}

#[test]
fn a_silent_worker_is_replaced_after_its_deadline() {
    let mut sim = Sim::new(&[
        Behaviour::Silent,
        Behaviour::Honest,
        Behaviour::Honest,
        Behaviour::Honest,
    ]);
    let job = sim.submit(spec(Replication::Fixed(3), 2));
    sim.drive();
    // The silent worker got a replica (the simulation is deterministic:
    // this is not left to chance).
    assert!(sim.ran.iter().any(|(w, _)| *w == sim.order[0]));
    assert_eq!(sim.state(&job), JobState::Running);
    let deadline = sim.scheduler.poll_timeout().unwrap();
    sim.advance_to(deadline);
    assert!(sim.cancels > 0);
    assert!(sim.reputation(0).silent > 0);
    assert_eq!(sim.state(&job), JobState::Done);
}

#[test]
fn a_worker_that_commits_and_never_reveals_is_replaced_and_earns_nothing() {
    // Bound proven: a committed replica that does not reveal holds its task
    // for at most `reveal_timeout_ms`; it is then counted silent, never in
    // the agreeing set (so never paid), and the task is accepted without
    // it.
    let mut sim = Sim::new(&[
        Behaviour::NeverReveals,
        Behaviour::Honest,
        Behaviour::Honest,
        Behaviour::Honest,
        Behaviour::Honest,
    ]);
    let job = sim.submit(spec(Replication::Fixed(4), 1));
    sim.drive();
    assert!(sim.ran.iter().any(|(w, _)| *w == sim.order[0]));
    // Everyone committed; the others revealed; the task waits for one.
    assert_eq!(sim.state(&job), JobState::Running);
    let deadline = sim.scheduler.poll_timeout().unwrap();
    assert!(deadline <= sim.now + Config::default().reveal_timeout_ms);
    sim.advance_to(deadline);
    // Replaced by the fifth worker, whose reveal completes the quorum.
    assert_eq!(sim.state(&job), JobState::Done);
    let withholder = sim.reputation(0);
    assert!(withholder.silent > 0, "{withholder:?}");
    assert_eq!(withholder.agreed, 0);
    assert_eq!(
        (1..5)
            .filter(|&worker| sim.reputation(worker).agreed == 1)
            .count(),
        4
    );
}

#[test]
fn a_vanished_worker_is_replaced_at_once() {
    let mut sim = Sim::new(&[Behaviour::Silent, Behaviour::Honest, Behaviour::Honest]);
    sim.scheduler
        .worker_up(Keypair::from_seed(&[99; 32]).node_id(), 4, sim.now);
    let extra = Keypair::from_seed(&[99; 32]).node_id();
    sim.workers.insert(extra, Behaviour::Honest);
    let job = sim.submit(spec(Replication::Fixed(3), 1));
    sim.drive();
    if sim.ran.iter().any(|(w, _)| *w == sim.order[0]) {
        sim.scheduler.worker_down(sim.order[0], sim.now);
        sim.drive();
    }
    assert_eq!(sim.state(&job), JobState::Done);
}

#[test]
fn too_few_workers_waits_then_fails_at_the_deadline() {
    let mut sim = Sim::new(&[Behaviour::Honest, Behaviour::Honest]);
    let mut job_spec = spec(Replication::Fixed(3), 1);
    job_spec.deadline_ms = 5_000;
    let job = sim.submit(job_spec);
    sim.drive();
    assert_eq!(sim.state(&job), JobState::Running);
    sim.advance_to(sim.now + 5_000);
    match sim.state(&job) {
        JobState::Failed(reason) => assert!(reason.contains("deadline"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // The two replicas that ran were told to stop.
    assert!(sim.cancels >= 2);
}

#[test]
fn every_worker_silent_fails_the_task_after_bounded_attempts() {
    let mut sim = Sim::new(&[Behaviour::Silent; 12]);
    let mut job_spec = spec(Replication::Fixed(1), 1);
    job_spec.deadline_ms = crate::spec::DEADLINE_MS_MAX;
    let job = sim.submit(job_spec);
    sim.drive();
    for _ in 0..20 {
        if sim.state(&job) != JobState::Running {
            break;
        }
        let deadline = sim.scheduler.poll_timeout().unwrap();
        sim.advance_to(deadline);
    }
    match sim.state(&job) {
        JobState::Failed(reason) => assert!(reason.contains("too few"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let tried = sim.scheduler.job(&job).unwrap().tasks[0].replicas.len();
    assert_eq!(tried, 1 + Config::default().spare_attempts as usize);
}

#[test]
fn cancelling_stops_every_replica() {
    let mut sim = Sim::new(&[Behaviour::Silent; 3]);
    let job = sim.submit(spec(Replication::Fixed(3), 2));
    sim.drive();
    assert!(sim.scheduler.cancel(&job, sim.now));
    sim.drive();
    assert_eq!(sim.state(&job), JobState::Cancelled);
    assert_eq!(sim.cancels, 6);
    assert!(!sim.scheduler.cancel(&job, sim.now));
    // Slots are free again.
    assert!(sim.scheduler.workers().iter().all(|w| w.2 == 0));
}

#[test]
fn a_trusted_worker_runs_adaptive_tasks_alone_apart_from_spot_checks() {
    let mut sim = Sim::new(&[Behaviour::Honest; 3]);
    // Build a record: 12 fully replicated tasks.
    let warm = sim.submit(spec(Replication::Fixed(3), 12));
    sim.drive();
    assert_eq!(sim.state(&warm), JobState::Done);
    sim.ran.clear();
    sim.now += 1;
    let job = sim.submit(spec(Replication::Adaptive(3), 64));
    sim.drive();
    assert_eq!(sim.state(&job), JobState::Done);
    let runs = sim.ran.len();
    assert!(
        runs < 64 * 3,
        "adaptive replication saved nothing: {runs} runs"
    );
    assert!(runs > 64, "no spot checks: {runs} runs");
    // Every task run on fewer replicas is counted and explained.
    let job = sim.scheduler.job(&job).unwrap();
    let alone = job.tasks_on_fewer_replicas() as usize;
    assert_eq!(runs, alone + (64 - alone) * 3);
    let explained = job
        .log
        .iter()
        .filter(|line| line.contains("alone, not 3 workers"))
        .count();
    assert_eq!(explained, alone);
}

#[test]
fn running_alone_builds_no_record_so_adaptive_trusts_only_verified_workers() {
    let mut sim = Sim::new(&[Behaviour::Honest; 3]);
    // Many tasks run on one worker each: none is confirmed by another.
    for replication in [Replication::Trust, Replication::Fixed(1)] {
        let job = sim.submit(spec(replication, 40));
        sim.drive();
        assert_eq!(sim.state(&job), JobState::Done);
        sim.now += 1;
    }
    for worker in 0..3 {
        assert_eq!(sim.reputation(worker), Reputation::default());
    }
    // So adaptive replication runs every task on all it asked for (9
    // tasks: fewer than the 10 confirmed results that earn trust).
    sim.ran.clear();
    let job = sim.submit(spec(Replication::Adaptive(3), 9));
    sim.drive();
    assert_eq!(sim.state(&job), JobState::Done);
    assert_eq!(sim.ran.len(), 27);
    assert_eq!(
        sim.scheduler.job(&job).unwrap().tasks_on_fewer_replicas(),
        0
    );
    // Those confirmed results do count.
    assert_eq!(sim.reputation(0).streak, 9);
}

#[test]
fn a_program_that_fails_fails_its_job_keeps_its_output_and_stops_the_rest() {
    let mut sim = Sim::new(&[Behaviour::Honest; 3]);
    sim.trapping = Some(1);
    // 3 workers × 4 slots hold 4 tasks of 3 replicas at a time: tasks
    // 4..10 are placed only as earlier ones finish.
    let job = sim.submit(spec(Replication::Fixed(3), 10));
    sim.drive();
    let JobState::Failed(why) = sim.state(&job) else {
        panic!("{:?}", sim.state(&job));
    };
    assert_eq!(
        why,
        "task 1: its program trapped: unreachable (3 of 3 replica(s) agree: the program failed, not the workers)"
    );
    assert_eq!(sim.ended, vec![job]);
    // The failing task's outcome is accepted and stored (its stderr can
    // be read), the honest workers are not blamed, nothing is placed
    // after the end and nothing is left running.
    let record = sim.scheduler.job(&job).unwrap();
    assert!(matches!(
        &record.tasks[1].state,
        TaskState::Accepted { stored: true, outcome, .. } if !outcome.status.succeeded()
    ));
    assert_eq!(sim.ran.len(), sim.ran_when_ended[0], "placed after the end");
    assert!(record.tasks.iter().all(|task| {
        task.replicas
            .iter()
            .all(|replica| replica.state != ReplicaState::Running)
    }));
    for worker in 0..3 {
        assert_eq!(sim.reputation(worker).dissented, 0);
        assert_eq!(sim.reputation(worker).silent, 0);
    }
}

#[test]
fn slots_bound_what_runs_at_once() {
    let mut sim = Sim::new(&[Behaviour::Silent; 3]);
    let job = sim.submit(spec(Replication::Fixed(3), 10));
    sim.drive();
    // 3 workers × 4 slots, 3 replicas per task: 4 tasks placed.
    assert_eq!(sim.ran.len(), 12);
    assert!(sim.scheduler.workers().iter().all(|w| w.2 == 4));
    assert_eq!(sim.state(&job), JobState::Running);
}

#[test]
fn a_restored_hub_asks_again_and_finishes() {
    let mut sim = Sim::new(&[Behaviour::Honest; 3]);
    let job = sim.submit(spec(Replication::Fixed(3), 3));
    // Take the run actions but do not answer them: the hub "crashes".
    let mut pending = 0;
    while let Some(Action::Run { .. }) = sim.scheduler.poll_action() {
        pending += 1;
    }
    assert_eq!(pending, 9);
    let saved: Vec<Job> = sim.scheduler.jobs().cloned().collect();
    let reputation = sim.scheduler.take_dirty_workers();
    sim.scheduler = Scheduler::restore(Config::default(), saved, reputation, sim.now);
    for id in sim.order.clone() {
        sim.scheduler.worker_up(id, 4, sim.now);
    }
    sim.drive();
    assert_eq!(sim.state(&job), JobState::Done);
    assert!(
        sim.scheduler
            .job(&job)
            .unwrap()
            .log
            .iter()
            .any(|l| l.contains("restarted"))
    );
}

#[test]
fn jobs_persist_through_messagepack() {
    let mut sim = Sim::new(&[Behaviour::Cheat, Behaviour::Honest, Behaviour::Honest]);
    let job = sim.submit(spec(Replication::Fixed(3), 2));
    sim.drive();
    let record = sim.scheduler.job(&job).unwrap().clone();
    let value = crate::to_value(&record).unwrap();
    let back: Job = crate::from_value(value).unwrap();
    assert_eq!(back, record);
}

#[test]
fn bad_specs_are_refused() {
    let mut sim = Sim::new(&[Behaviour::Honest]);
    let buyer = Keypair::from_seed(&[7; 32]).node_id();
    let mut bad = spec(Replication::Fixed(3), 0);
    assert!(matches!(
        sim.scheduler
            .submit(JobId(Digest::of(b"a")), bad.clone(), buyer, 0),
        Err(SubmitError::Spec(SpecError::Split(0)))
    ));
    bad.split = 1;
    sim.scheduler
        .submit(JobId(Digest::of(b"a")), bad.clone(), buyer, 0)
        .unwrap();
    assert_eq!(
        sim.scheduler.submit(JobId(Digest::of(b"a")), bad, buyer, 0),
        Err(SubmitError::Duplicate)
    );
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn behaviour() -> impl Strategy<Value = Behaviour> {
        prop_oneof![
            4 => Just(Behaviour::Honest),
            1 => Just(Behaviour::Silent),
            1 => Just(Behaviour::Liar),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the workers do, every job ends, by its deadline at the
        /// latest; with at most one cheat among them, an accepted outcome
        /// is always the true one.
        #[test]
        fn jobs_always_end_and_one_cheat_never_wins(
            mut behaviours in proptest::collection::vec(behaviour(), 3..9),
            cheat in any::<bool>(),
            replicas in 1u8..5,
            split in 1u32..6,
        ) {
            if cheat {
                behaviours[0] = Behaviour::Cheat;
            }
            let mut sim = Sim::new(&behaviours);
            let job = sim.submit(spec(Replication::Fixed(replicas), split));
            sim.drive();
            for _ in 0..200 {
                if sim.state(&job) != JobState::Running {
                    break;
                }
                let Some(next) = sim.scheduler.poll_timeout() else { break };
                sim.advance_to(next.max(sim.now));
            }
            prop_assert!(sim.state(&job).is_ended(), "{:?}", sim.state(&job));
            if replicas >= 3 {
                for (index, outcome) in &sim.stored {
                    prop_assert_eq!(outcome.stdout, Digest::of(&index.to_le_bytes()));
                }
            }
            prop_assert!(sim.scheduler.workers().iter().all(|w| w.2 == 0));
        }
    }
}

#[test]
fn a_passing_failure_cools_the_worker_then_asks_it_again() {
    let mut sim = Sim::new(&[Behaviour::Silent]);
    let job = sim.submit(spec(Replication::Trust, 1));
    let Some(Action::Run { worker, task }) = sim.scheduler.poll_action() else {
        panic!("no run")
    };
    sim.scheduler
        .run_failed(worker, task.job, task.index, "busy", true, sim.now);
    // Not at once: the worker cools off first.
    assert!(sim.scheduler.poll_action().is_none());
    let next = sim.scheduler.poll_timeout().unwrap();
    assert_eq!(next, sim.now + 1000);
    sim.now = next;
    sim.scheduler.handle_timeout(sim.now);
    assert!(matches!(
        sim.scheduler.poll_action(),
        Some(Action::Run { .. })
    ));
    // A refusal of the input is not asked again: with no other worker,
    // the task fails at once, saying why.
    sim.scheduler
        .run_failed(worker, task.job, task.index, "not a module", false, sim.now);
    match sim.state(&job) {
        JobState::Failed(why) => assert!(why.contains("not a module"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn only_the_newest_ended_jobs_are_remembered() {
    let mut sim = Sim::new(&[Behaviour::Honest; 3]);
    let mut config = Config {
        ended_jobs_max: 3,
        ..Config::default()
    };
    sim.scheduler = Scheduler::new(config.clone());
    for id in sim.order.clone() {
        sim.scheduler.worker_up(id, 4, sim.now);
    }
    let mut ids = Vec::new();
    for _ in 0..5 {
        sim.now += 1;
        ids.push(sim.submit(spec(Replication::Fixed(3), 1)));
        sim.drive();
    }
    assert_eq!(sim.scheduler.jobs().count(), 3);
    assert_eq!(sim.scheduler.take_forgotten_jobs(), ids[..2].to_vec());
    assert!(sim.scheduler.job(&ids[4]).is_some());
    // A restore keeps the bound too.
    let saved: Vec<Job> = sim.scheduler.jobs().cloned().collect();
    config.ended_jobs_max = 1;
    let restored = Scheduler::restore(config, saved, Vec::new(), sim.now);
    assert_eq!(restored.jobs().count(), 1);
}
