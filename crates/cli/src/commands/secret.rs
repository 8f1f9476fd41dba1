//! `rota secret create|delete|rotate-key`: thin calls of the secrets API. Values are read
//! from files, literals or stdin and sent once; nothing here prints or logs a value (the
//! answers carry key names and sizes only). Listing is `rota get secret`.

use crate::args::{GlobalArgs, RotateKeyArgs, SecretCommand, SecretCreateArgs};
use crate::commands::job::Api;
use crate::config::Paths;
use crate::failure::usage;
use crate::output::{Out, note};
use anyhow::{Context, Result};
use rota_api_types::Bytes64;
use rota_api_types::secrets::{PutSecretRequest, RotateKeyRequest};
use std::collections::BTreeMap;
use std::io::Read;
use std::process::ExitCode;
use zeroize::Zeroizing;

pub(crate) async fn run(global: &GlobalArgs, command: SecretCommand, paths: &Paths) -> Result<ExitCode> {
    match command {
        SecretCommand::Create(args) => create(global, &args, paths).await,
        SecretCommand::Delete { name } => {
            let api = Api::connect(global, paths)?;
            let resp = api.client.delete_secret(&name).await.map_err(|e| api.error(e, None))?;
            let mut out = Out::new();
            if global.json {
                out.json(&resp)?;
            } else {
                writeln!(out, "secrets/{} deleted", resp.name)?;
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        SecretCommand::RotateKey(args) => rotate_key(global, &args, paths).await,
    }
}

/// The values the flags give, by key; a key given twice is a usage error.
fn values(args: &SecretCreateArgs) -> Result<BTreeMap<String, Bytes64>> {
    let mut data = BTreeMap::new();
    let mut add = |key: &str, value: Vec<u8>| -> Result<()> {
        if data.insert(key.to_string(), Bytes64(value)).is_some() {
            return Err(usage(format!("key '{key}' is given twice")));
        }
        Ok(())
    };
    for (k, path) in &args.from_file {
        let v = std::fs::read(path).with_context(|| format!("--from-file {k}: cannot read {path}"))?;
        add(k, v)?;
    }
    for (k, v) in &args.from_literal {
        add(k, v.as_bytes().to_vec())?;
    }
    if let Some(k) = &args.from_stdin {
        let mut v = Vec::new();
        std::io::stdin().read_to_end(&mut v).context("--from-stdin: cannot read stdin")?;
        add(k, v)?;
    }
    if data.is_empty() {
        return Err(usage(
            "give at least one value: --from-file KEY=PATH, --from-literal KEY=VALUE or --from-stdin KEY",
        ));
    }
    Ok(data)
}

async fn create(global: &GlobalArgs, args: &SecretCreateArgs, paths: &Paths) -> Result<ExitCode> {
    let req = PutSecretRequest { labels: args.labels.iter().cloned().collect(), data: values(args)? };
    let api = Api::connect(global, paths)?;
    let resp = api.client.put_secret(&args.name, &req).await.map_err(|e| api.error(e, None))?;
    // The request held the values: wipe them before it is freed.
    for mut v in req.data.into_values() {
        zeroize::Zeroize::zeroize(&mut v.0);
    }
    let mut out = Out::new();
    if global.json {
        out.json(&resp)?;
    } else {
        writeln!(out, "secrets/{} {}", resp.secret.name, resp.action)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

async fn rotate_key(global: &GlobalArgs, args: &RotateKeyArgs, paths: &Paths) -> Result<ExitCode> {
    let (key, created) = crate::secret_key::new_key(&args.new_key_file)?;
    if created {
        note(format_args!("new secret key written to {} (mode 0600)", args.new_key_file.display()));
    }
    let api = Api::connect(global, paths)?;
    let req = RotateKeyRequest { key: Zeroizing::new(key.to_text().trim().to_string()).to_string() };
    let resp = api.client.rotate_secret_key(&req).await.map_err(|e| api.error(e, None))?;
    let mut out = Out::new();
    if global.json {
        out.json(&resp)?;
    } else {
        writeln!(
            out,
            "{} secret(s) re-encrypted: key {} → {}",
            resp.secrets, resp.previous_fingerprint, resp.fingerprint
        )?;
        if let Some(f) = &resp.key_file {
            writeln!(out, "the server rewrote its key file {f} (the old key kept as {f}.previous)")?;
        }
        writeln!(
            out,
            "copy {} over the --secret-key-file of every other server of this control plane",
            args.new_key_file.display()
        )?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
