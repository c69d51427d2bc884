//! S7 and S10, played on real replicas by a [`Stage`]: what the stage does at each step, and
//! the paragraphs that say why.

use super::Trace;
use super::stage::Stage;

/// S7: a client's write is committed and applied, its answer is lost with the leader, the
/// client retries with the same session and sequence number on the new leader, and the state
/// machine answers from its session table without applying the write twice.
pub(super) fn s7() -> Trace {
    let mut s = Stage::new(
        "s7",
        "S7: a retried write is applied once (client sessions)",
        "A client whose leader crashes before answering cannot know whether its write took \
         effect, so it retries, perhaps on another member. Each of tenure's writes carries the \
         client's id and a sequence number; the state machine keeps, per client, the last \
         sequence it applied and the answer it gave, and answers a retry from that table \
         instead of applying it again (Raft dissertation §6.3).",
    );
    s.quiet(true);
    s.begin("elect", "Let the clocks run until a leader is elected (messages not shown).");
    let first_leader = s.elect_among(&[1, 2, 3]);
    s.quiet(false);
    let l1 = format!("n{first_leader}");

    s.note(&format!(
        "Client 7 writes x=1 as sequence 1 of its session (client id 7) to the leader {l1}. \
         The write is replicated, committed and applied; {l1} answers, but the answer never \
         reaches the client."
    ));
    s.begin(
        &format!("propose {l1} put x=1 session=7 seq=1"),
        &format!("Client 7 sends its first write, x=1, to {l1}, tagged client 7, sequence 1."),
    );
    let first = s.propose(first_leader, &Stage::put("x", "1", Some((7, 1))), "client 7's put x=1");
    s.begin(
        "sync, deliver",
        "Every fsync completes and every message arrives, until the leader answers.",
    );
    for _ in 0..10 {
        if s.answer(first).is_some() {
            break;
        }
        s.step_all();
    }
    let first_revision = s.answered_revision(first).expect("the first write was answered");
    s.begin(
        &format!("crash {l1}"),
        &format!("{l1} crashes right after answering: the answer and its messages are lost."),
    );
    let lost = s.drop_from(first_leader);
    s.crash(first_leader);
    s.line(
        format!("{l1} crashed; {lost} message(s) it had sent were lost; client 7 got no answer"),
        format!(
            "Client 7's connection to {l1} broke before the answer (revision {first_revision}) \
             arrived. For the client this is S6(c) or (e): its write may or may not have taken \
             effect, and the only safe thing to do is to retry."
        ),
    );

    s.note(
        "The other two elect a new leader. The new leader's log holds the write (it was \
         committed, so every future leader has it, Raft §5.4) and applies it.",
    );
    s.quiet(true);
    s.begin("elect", "Let the clocks of the two running members run until one leads.");
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|&i| i != first_leader).collect();
    let leader = s.elect_among(&others);
    s.quiet(false);
    let l2 = format!("n{leader}");
    s.show_key(
        leader,
        "x",
        &format!(
            "{l2} applied the write once, at revision {first_revision}. Its session table \
             holds client 7: last sequence 1, answer revision {first_revision}."
        ),
    );

    s.note(&format!(
        "Client 7 retries the same request, with the same client id and sequence number, on \
         the new leader {l2}. It goes through the log again, as any write does; when it is \
         applied, the state machine finds sequence 1 of client 7 already applied and answers \
         with the stored result."
    ));
    s.begin(
        &format!("propose {l2} put x=1 session=7 seq=1"),
        &format!("Client 7 retries x=1 on {l2}: client 7, sequence 1, as before."),
    );
    let retry = s.propose(leader, &Stage::put("x", "1", Some((7, 1))), "client 7's retry of x=1");
    s.begin("settle", "Every fsync completes and every message arrives.");
    s.settle();
    let retry_revision = s.answered_revision(retry).expect("the retry was answered");
    s.line(
        format!("retry answered revision {retry_revision}, first answer revision {first_revision}"),
        if retry_revision == first_revision {
            "The retry gets the first attempt's answer: the entry was committed and applied, but \
             the session table turned its apply into a lookup."
                .to_string()
        } else {
            "The retry got a different answer than the first attempt.".to_string()
        },
    );
    s.show_key(
        leader,
        "x",
        "x still has version 1 and the store's revision did not move: the write took effect \
         once, although the log holds it twice.",
    );

    s.note(
        "The client goes on with sequence 2. A late duplicate of sequence 1 arriving after it \
         is refused: its stored answer is gone, and applying it would undo sequence 2.",
    );
    s.quiet(true);
    s.begin(
        &format!("propose {l2} put x=2 session=7 seq=2"),
        "Client 7's next write, x=2, sequence 2.",
    );
    s.propose(leader, &Stage::put("x", "2", Some((7, 2))), "client 7's put x=2");
    s.settle();
    s.begin(
        &format!("propose {l2} put x=1 session=7 seq=1"),
        "A delayed copy of client 7's first request arrives now.",
    );
    s.propose(leader, &Stage::put("x", "1", Some((7, 1))), "the late copy of client 7's x=1");
    s.settle();
    s.quiet(false);
    s.show_key(leader, "x", "x=2 stays: the late copy changed nothing.");

    s.note(&format!(
        "{l1} restarts and catches up from the log, duplicates included. The session table is \
         part of the replicated state (and of snapshots), so {l1} skips the same duplicates and \
         ends with the same store."
    ));
    s.begin(&format!("restart {l1}"), &format!("{l1} restarts from its disk."));
    s.restart(first_leader);
    s.quiet(true);
    s.begin("heartbeats", "A few heartbeats: the leader brings the restarted member up to date.");
    s.heartbeats();
    s.quiet(false);
    s.show_key(first_leader, "x", &format!("{l1} reached the same state: x=2, version 2."));
    s.show_key(leader, "x", &format!("{l2}, for comparison."));

    s.note(
        "Without a session, a retry is just another write: the state machine cannot tell it \
         from a new one. tenure's clients tag every write for this reason.",
    );
    s.quiet(true);
    s.begin(
        &format!("propose {l2} put y=1 (no session), twice"),
        "A client without a session writes y=1, then retries it.",
    );
    s.propose(leader, &Stage::put("y", "1", None), "a put of y=1 without a session");
    s.settle();
    s.propose(leader, &Stage::put("y", "1", None), "the retry of y=1 without a session");
    s.settle();
    s.quiet(false);
    s.show_key(
        leader,
        "y",
        "Applied twice: y has version 2 and the revision moved twice. With a watch on y, or a \
         write that is not idempotent (a counter, a transaction), the retry would have done \
         harm.",
    );
    s.finish()
}

/// S10: votes and acknowledgements leave only once durable, the leader counts its own copy
/// only once synced, and a crash before an fsync loses nothing anyone was told.
pub(super) fn s10() -> Trace {
    let mut s = Stage::new(
        "s10",
        "S10: durable before anything depends on it",
        "A member's term, vote and log go to disk and are fsynced before any message that \
         depends on them leaves: a vote, an append acknowledgement. The leader counts its own \
         copy of an entry only once it is durable too, and answers a client only once a \
         majority has the entry durably. So a crash, which loses whatever was written but not \
         synced, never loses anything acknowledged.",
    );
    s.note(
        "An election: a candidate asks for votes; each voter writes its vote and replies only \
         once the vote is on disk, so it can never vote twice in one term, even across a crash \
         (S2).",
    );
    s.quiet(true);
    s.begin(
        "tick until a pre-candidate",
        "Every clock runs until a member's election timer fires.",
    );
    let candidate = s.tick_until_pre_candidate();
    s.quiet(false);
    let c = format!("n{candidate}");
    s.begin("deliver", "The pre-votes arrive and are answered (a pre-vote changes no state).");
    s.deliver(None);
    s.begin(
        &format!("deliver to {c}"),
        &format!("The pre-vote answers reach {c}; it becomes a candidate."),
    );
    s.deliver(Some(candidate));
    s.begin(
        &format!("sync {c}"),
        &format!(
            "{c}'s fsync completes: its new term and its vote for itself are durable, and only \
             now do its vote requests leave."
        ),
    );
    s.sync(candidate);
    let voters: Vec<u64> = [1, 2, 3].into_iter().filter(|&i| i != candidate).collect();
    let (v1, v2) = (voters[0], voters[1]);
    s.begin(
        &format!("deliver to n{v1}"),
        &format!("The vote request reaches n{v1}: it grants its vote, writes it, and waits."),
    );
    s.deliver(Some(v1));
    s.show_status(
        v1,
        &format!(
            "n{v1} has taken the candidate's term and written its vote, but no reply has left: \
             the reply waits for the fsync."
        ),
    );
    s.begin(&format!("sync n{v1}"), &format!("n{v1}'s fsync completes."));
    s.sync(v1);
    s.quiet(true);
    s.begin(
        "settle",
        "Everything else is delivered and synced: the candidate wins and commits its first \
         entry.",
    );
    s.settle();
    s.quiet(false);
    let leader = s.leader().expect("a leader after the election");
    let l = format!("n{leader}");
    s.show_status(leader, &format!("{l} leads; its first entry of the term is committed."));

    s.note(&format!(
        "A write. {l}'s append goes to the followers at once, while its own fsync runs; a \
         follower acknowledges only once the entries are durable, and {l} counts its own copy \
         only once its fsync is done."
    ));
    s.begin(&format!("propose {l} put k=v"), &format!("A client asks {l} to write k=v."));
    let write = s.propose(leader, &Stage::put("k", "v", None), "the put of k=v");
    s.begin(
        &format!("deliver to n{v1}, n{v2}"),
        "The append reaches both followers: each writes the entry and starts an fsync; no \
         acknowledgement leaves yet.",
    );
    s.deliver(Some(v1));
    s.deliver(Some(v2));
    s.line(
        format!(
            "acknowledgements in flight: n{v1} {}, n{v2} {}",
            s.ack_in_flight(v1),
            s.ack_in_flight(v2)
        ),
        "Neither follower has acknowledged: their copies are written, not durable.".to_string(),
    );
    s.begin(&format!("crash n{v2}"), &format!("n{v2} crashes before its fsync completes."));
    s.crash(v2);
    s.line(
        format!("n{v2} crashed before its fsync"),
        format!(
            "n{v2}'s copy of the entry was never durable and is lost; it never acknowledged it, \
             so nobody counted it."
        ),
    );
    s.begin(
        &format!("sync n{v1}"),
        &format!("n{v1}'s fsync completes: its acknowledgement leaves."),
    );
    s.sync(v1);
    s.begin(
        &format!("deliver to {l}"),
        &format!("n{v1}'s acknowledgement reaches {l}, whose own fsync is still running."),
    );
    s.deliver(Some(leader));
    s.show_status(
        leader,
        &format!(
            "One durable copy (n{v1}'s) is not a majority of three: {l}'s own copy does not \
             count until it is durable, so the entry is not committed and the client waits."
        ),
    );
    s.begin(&format!("sync {l}"), &format!("{l}'s fsync completes."));
    s.sync(leader);
    if s.answer(write).is_none() {
        s.begin("settle", "Everything else is delivered and synced.");
        s.settle();
    }
    let revision = s.answered_revision(write).expect("the write was answered");
    s.show_status(
        leader,
        &format!(
            "Two durable copies ({l}'s and n{v1}'s): committed, applied, and the client has its \
             answer (revision {revision})."
        ),
    );

    s.note(&format!(
        "n{v2} restarts without the entry, and then every member crashes at once, losing \
         whatever was not synced. The acknowledged write survives: a majority had it on disk \
         before anyone was told."
    ));
    s.begin(&format!("restart n{v2}"), &format!("n{v2} restarts from its disk."));
    s.restart(v2);
    s.begin("crash all", "Every member crashes at once (a power cut).");
    for id in [1, 2, 3] {
        s.crash(id);
    }
    s.begin("restart all", "Every member restarts from its disk.");
    for id in [1, 2, 3] {
        s.restart(id);
    }
    s.quiet(true);
    s.begin("elect", "Let the clocks run until a leader is elected.");
    let leader = s.elect_among(&[1, 2, 3]);
    s.heartbeats();
    s.quiet(false);
    let l = format!("n{leader}");
    s.begin(&format!("read {l} k"), &format!("A client reads k linearizably on {l}."));
    s.read(leader, "k");
    s.settle();
    s.quiet(true);
    s.begin("heartbeats", "A few heartbeats: every member learns the commit index.");
    s.heartbeats();
    s.quiet(false);
    for id in [1, 2, 3] {
        s.show_key(id, "k", &format!("n{id} holds the acknowledged write."));
    }
    s.finish()
}
