//! Clap types of `rota secret`: create (from files, literals or stdin), delete, rotate-key.

use super::parse_key_value;
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// `rota secret …`.
#[derive(Debug, Subcommand)]
pub(crate) enum SecretCommand {
    /// Create or replace a secret from files, literals or stdin (values of at least 6
    /// bytes; `rota get secret NAME` shows key names and sizes, never a value).
    ///
    /// Example:
    ///   rota secret create deploy --from-file token=./token.txt
    ///   printf %s "$TOKEN" | rota secret create deploy --from-stdin token
    #[command(verbatim_doc_comment)]
    Create(SecretCreateArgs),
    /// Delete a secret (steps referring to it fail when next claimed, naming it).
    Delete {
        /// The secret.
        name: String,
    },
    /// Re-encrypt every secret under a new key-encryption key (README: rotating the key).
    ///
    /// Writes the new key to FILE (mode 0600) unless FILE exists (then its key is used),
    /// sends it to the server, which re-encrypts every secret in one transaction and
    /// rewrites its own --secret-key-file (keeping the old key as FILE.previous). Copy FILE
    /// over the key file of every other server of the fleet.
    #[command(name = "rotate-key")]
    RotateKey(RotateKeyArgs),
}

/// `rota secret create`.
#[derive(Debug, Args)]
pub(crate) struct SecretCreateArgs {
    /// The secret's name.
    pub(crate) name: String,
    /// A key whose value is a file's content, `KEY=PATH` (repeat for several).
    #[arg(long = "from-file", value_name = "KEY=PATH", value_parser = parse_key_value)]
    pub(crate) from_file: Vec<(String, String)>,
    /// A key and its value, `KEY=VALUE` (the value then sits in shell history: prefer
    /// --from-file or --from-stdin).
    #[arg(long = "from-literal", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(crate) from_literal: Vec<(String, String)>,
    /// A key whose value is read from stdin (to its end, as is).
    #[arg(long = "from-stdin", value_name = "KEY")]
    pub(crate) from_stdin: Option<String>,
    /// A label, `NAME=VALUE` (repeat for several).
    #[arg(long = "label", value_name = "NAME=VALUE", value_parser = parse_key_value)]
    pub(crate) labels: Vec<(String, String)>,
}

/// `rota secret rotate-key`.
#[derive(Debug, Args)]
pub(crate) struct RotateKeyArgs {
    /// The new key's file: created with a fresh key unless it exists.
    #[arg(long = "new-key-file", value_name = "FILE")]
    pub(crate) new_key_file: PathBuf,
}
