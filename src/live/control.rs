//! Commands the API sends to the engine thread, which owns the engine: the
//! engine applies them between two rounds of input, so no event is dropped or
//! judged by half-replaced rules.

use std::sync::mpsc::{Receiver, Sender, channel};

use crate::config::{DecisionConfig, ModelSpec, RuleSpec};
use crate::engine::Engine;

/// A request to the engine thread, with where to send the answer.
pub enum Command {
    /// Replace rules and decision policy; answers the names of the rules now in force.
    Reload {
        rules: Vec<RuleSpec>,
        decisions: DecisionConfig,
        models: Vec<ModelSpec>,
        reply: tokio::sync::oneshot::Sender<Result<Vec<String>, String>>,
    },
}

/// The API's end of the channel.
#[derive(Clone)]
pub struct Control(Sender<Command>);

/// The engine thread's end.
pub struct Inbox(Receiver<Command>);

/// A connected pair.
pub fn channel_pair() -> (Control, Inbox) {
    let (tx, rx) = channel();
    (Control(tx), Inbox(rx))
}

impl Control {
    /// Asks the engine to reload; `Err` if the engine is gone or refused them.
    pub async fn reload(
        &self,
        rules: Vec<RuleSpec>,
        decisions: DecisionConfig,
        models: Vec<ModelSpec>,
    ) -> Result<Vec<String>, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.0
            .send(Command::Reload { rules, decisions, models, reply })
            .map_err(|_| "the engine has stopped".to_string())?;
        answer.await.map_err(|_| "the engine has stopped".to_string())?
    }
}

impl Inbox {
    /// Applies every pending command.
    pub fn apply(&self, engine: &mut Engine) {
        while let Ok(cmd) = self.0.try_recv() {
            match cmd {
                Command::Reload { rules, decisions, models, reply } => {
                    let result = engine
                        .reload(rules, decisions, models)
                        .map(|()| engine.rule_names())
                        .map_err(|e| e.to_string());
                    if let Err(e) = &result {
                        tracing::warn!(error = %e, "rules not reloaded");
                    } else {
                        tracing::info!("rules reloaded");
                    }
                    let _ = reply.send(result);
                }
            }
        }
    }
}
