//! The scenario player's data: the seed scenarios ([`tenure_sim::scenario`]) as JSON, run
//! afresh for each request (a run takes milliseconds and is the same every time).

use serde_json::{Value, json};
use tenure_sim::scenario;

/// Every scenario: `[{"id", "title"}]`.
pub fn list() -> Value {
    scenario::SCENARIOS.iter().map(|s| json!({ "id": s.id, "title": s.title })).collect()
}

/// One scenario's run: `{"id", "title", "summary", "steps": [{"note", "command",
/// "command_explanation", "line", "explanation", "nodes": [{"id", "role", "term", "leader",
/// "last_index", "applied", "up"}]}]}`; an error for an unknown id.
pub fn trace(id: &str) -> Result<Value, String> {
    let t = scenario::find(id).and_then(scenario::run)?;
    let steps: Vec<Value> = t
        .steps
        .iter()
        .map(|s| {
            let nodes: Vec<Value> = s
                .nodes
                .iter()
                .map(|(id, n)| {
                    json!({
                        "id": format!("n{id}"), "role": n.role, "term": n.term,
                        "leader": n.leader.map(|l| format!("n{l}")),
                        "last_index": n.last_index, "applied": n.applied, "up": n.up,
                    })
                })
                .collect();
            json!({
                "note": s.note, "command": s.command,
                "command_explanation": s.command_explanation,
                "line": s.line, "explanation": s.explanation, "nodes": nodes,
            })
        })
        .collect();
    Ok(json!({ "id": t.id, "title": t.title, "summary": t.summary, "steps": steps }))
}
