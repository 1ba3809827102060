//! What a space's candidates are: networks, or one of the two kinds of program. Chosen by a
//! grammar's `kind` directive; read by validation, sampling, training and the prompts.

use super::node::Slot;

/// What the candidates of a space are: networks, or one of the two kinds of program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpaceKind {
    /// Architectures: modules checked by shape inference.
    #[default]
    Network,
    /// Activation functions: an expression in `x`.
    Activation,
    /// Optimizer update rules: `prog(state(...), statements...)`.
    Optimizer,
}

impl SpaceKind {
    pub fn name(self) -> &'static str {
        match self {
            SpaceKind::Network => "network",
            SpaceKind::Activation => "activation",
            SpaceKind::Optimizer => "optimizer",
        }
    }

    pub fn by_name(name: &str) -> Option<SpaceKind> {
        [
            SpaceKind::Network,
            SpaceKind::Activation,
            SpaceKind::Optimizer,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }

    /// Whether candidates are programs (checked by type, not by shape).
    pub fn is_program(self) -> bool {
        self != SpaceKind::Network
    }

    /// The slot the root must fill.
    pub fn root_slot(self) -> Slot {
        match self {
            SpaceKind::Network => Slot::Module,
            SpaceKind::Activation => Slot::Expr,
            SpaceKind::Optimizer => Slot::Program,
        }
    }
}
