//! flowrun: workflow automation as code.
//!
//! A `.flow` file goes through three stages, each with its own module:
//! [`syntax`] parses it into a tree, [`check`] validates the tree and lowers it
//! into a [`program::Program`], and [`run`] executes the program against one
//! entity. Only the command line in `main.rs` and [`cli`] calls every stage.

pub mod audio;
pub mod batch;
pub mod cacert;
pub mod check;
pub mod cli;
pub mod diagnostic;
pub mod document;
pub mod format;
pub mod input;
pub mod llm;
pub mod lsp;
pub mod program;
pub mod project;
pub mod render;
pub mod run;
pub mod schema;
pub mod store;
pub mod syntax;
pub mod value;
