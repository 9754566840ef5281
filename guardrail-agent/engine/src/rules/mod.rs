//! Guardrail rules: the format ([`spec`]), loading with includes
//! ([`load`]), validation and compilation ([`compile`], into [`matchers`]
//! and an [`index`], with [`diagnostics`] that name file, line and column),
//! time windows ([`window`]), evaluation against events ([`eval`]) as
//! rules see them ([`facts`]).
pub mod builtin;
pub mod compile;
pub mod diagnostics;
pub mod eval;
pub mod facts;
pub mod globs;
pub mod index;
pub mod kinds;
pub mod load;
pub mod matchers;
pub mod spec;
pub mod users;
pub mod window;

pub use compile::{Rule, RuleSet};
pub use eval::{decide, decide_facts, evaluate, Verdict};
pub use facts::Facts;
pub use load::{compile_text, compile_with_central, load_rules, CentralText, RulesError};

#[cfg(test)]
mod tests;
