//! Secrets end to end (issue 15, "Secret"), on both backends with real processes: a secret
//! referenced by a step's env reaches the step and nothing else (not `rota get`, not the
//! database's files or tables, not the server's log, not the stored output, where it is
//! masked even when printed one byte at a time); `$ROTA_OUTPUT` refuses it; `get -o yaml`
//! applies back unchanged; short values are refused; a key rotation keeps secrets
//! delivered, across a restart; a second PostgreSQL server with another key refuses to
//! start. Polls with generous bounds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_testkit::{Backend, Env, both_backends, rota, spawn_worker, submit, wait_for_end};
use std::path::Path;

const VALUE: &str = "s3cr3t-Value-9f2a";

fn ok(env: &Env, args: &[&str], stdin: Option<&str>) -> String {
    let mut cmd = rota(env);
    cmd.args(args);
    if let Some(s) = stdin {
        cmd.write_stdin(s);
    }
    let o = cmd.output().unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "rota {args:?} failed: {err}\n{out}");
    assert!(!out.contains(VALUE) && !err.contains(VALUE), "rota {args:?} printed the value");
    out.into_owned()
}

fn job_file(env: &Env, name: &str, run: &str) -> String {
    let path = env.path(&format!("{name}.yaml"));
    let doc = format!(
        "name: {name}\nsteps:\n  - name: s\n    run: {}\n    env: {{TOKEN: {{secret: deploy/token}}}}\n",
        rota_testkit::yaml_str(run)
    );
    std::fs::write(&path, doc).unwrap();
    path.display().to_string()
}

fn logs(env: &Env, id: &str) -> String {
    ok(env, &["job", "logs", id], None)
}

/// Every byte of the database as the server keeps it: SQLite's files (database, WAL,
/// logs database), or every PostgreSQL table as text.
async fn database_bytes(env: &Env) -> Vec<u8> {
    match env.database_url() {
        Some(url) => rota_testkit::records::Records::connect(url).await.dump_text().await.into_bytes(),
        None => {
            let mut all = Vec::new();
            for e in std::fs::read_dir(env.data_dir()).unwrap() {
                let p = e.unwrap().path();
                if p.file_name().unwrap().to_string_lossy().starts_with("rota.db") {
                    all.extend(std::fs::read(&p).unwrap());
                }
            }
            assert!(!all.is_empty(), "no database files in {}", env.data_dir().display());
            all
        }
    }
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

both_backends!(async fn a_secret_reaches_its_step_only_and_is_masked);
async fn a_secret_reaches_its_step_only_and_is_masked(backend: Backend) {
    let mut env = Env::on(backend);
    env.start_server(&[]);
    let key_file = env.data_dir().join("secret.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the key file is private");

    assert!(
        ok(&env, &["secret", "create", "deploy", "--from-stdin", "token"], Some(VALUE)).contains("created")
    );
    let _w = spawn_worker(&env, "w1", &[]);

    // The step sees the value; echoed whole or a byte at a time, it is masked.
    // Compared reversed: the job's own document must not hold the value either.
    let run = "test \"$(printf %s \"$TOKEN\" | rev)\" = 'a2f9-eulaV-t3rc3s' && echo seen-it; echo \"whole=$TOKEN.\"; \
               echo \"$TOKEN\" | fold -w1 | while read -r c; do printf %s \"$c\"; sleep 0.02; done; echo .";
    let id = submit(&env, &["-f", &job_file(&env, "see", run)]);
    let job = wait_for_end(&env, &id);
    let out = logs(&env, &id);
    assert_eq!(job["state"], "succeeded", "{job:#}\n{out}");
    assert!(out.contains("seen-it"), "{out}");
    assert!(out.contains("whole=***."), "{out}");
    assert!(out.lines().any(|l| l == "***."), "one byte at a time, masked: {out}");
    assert!(!out.contains(VALUE), "{out}");
    assert!(!job.to_string().contains(VALUE), "job show holds the value");

    // Reads show key names and sizes only.
    let yaml = ok(&env, &["get", "secret", "deploy", "-o", "yaml"], None);
    assert!(yaml.contains("token: 17") && yaml.contains("kind: Secret"), "{yaml}");
    ok(&env, &["get", "secret"], None);

    // Neither the server's log nor its database holds the value (nor the stored output).
    assert!(!env.server_log().contains(VALUE), "the server's log holds the value");
    let db = database_bytes(&env).await;
    assert!(!holds(&db, VALUE.as_bytes()), "the database holds the value");
    let hex: String = VALUE.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(!holds(&db, hex.as_bytes()), "the database holds the value as hex");
    assert!(holds(&db, b"deploy/token"), "the stored job keeps the reference");

    // $ROTA_OUTPUT refuses a value holding it, saying why.
    let id = submit(&env, &["-f", &job_file(&env, "leak", "echo \"OUT=x${TOKEN}y\" >> \"$ROTA_OUTPUT\"")]);
    let job = wait_for_end(&env, &id);
    let text = job.to_string();
    assert_eq!(job["state"], "failed", "{job:#}");
    assert!(text.contains("$ROTA_OUTPUT key 'OUT' holds a secret value"), "{job:#}");
    assert!(!text.contains(VALUE));

    // An unknown secret or key is refused at submit, naming the field.
    let path = env.path("bad.yaml");
    std::fs::write(&path, "steps:\n  - name: s\n    run: 'true'\n    env: {T: {secret: deploy/nokey}}\n")
        .unwrap();
    let o = rota(&env).args(["job", "submit", "-f", &path.display().to_string()]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("steps[0].env.T") && err.contains("no key 'nokey'"), "{err}");

    // Short values are refused at creation, without showing them.
    let o = rota(&env).args(["secret", "create", "short", "--from-literal", "pin=12345"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("at least 6") && !err.contains("12345"), "{err}");

    // get -o yaml applies back unchanged; a document with values replaces them.
    let file = env.path("secret.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let applied = ok(&env, &["apply", "-f", &file.display().to_string()], None);
    assert!(applied.contains("secrets/deploy unchanged"), "{applied}");
    let id = submit(
        &env,
        &["-f", &job_file(&env, "again", "test \"$(printf %s \"$TOKEN\" | rev)\" = 'a2f9-eulaV-t3rc3s'")],
    );
    assert_eq!(wait_for_end(&env, &id)["state"], "succeeded", "the stored value was kept");
    std::fs::write(
        &file,
        "kind: Secret\nmetadata: {name: deploy}\nspec:\n  stringData: {token: other-value-42}\n",
    )
    .unwrap();
    let applied = ok(&env, &["apply", "-f", &file.display().to_string()], None);
    assert!(applied.contains("secrets/deploy configured"), "{applied}");
    let id = submit(&env, &["-f", &job_file(&env, "new", "test \"$TOKEN\" = other-value-42")]);
    assert_eq!(wait_for_end(&env, &id)["state"], "succeeded", "{}", logs(&env, &id));

    // A rotation re-encrypts; secrets are still delivered, also after a restart with the
    // key file the server rewrote.
    let new_key = env.path("new.key");
    let rotated = ok(&env, &["secret", "rotate-key", "--new-key-file", &new_key.display().to_string()], None);
    assert!(rotated.contains("1 secret(s) re-encrypted"), "{rotated}");
    assert_eq!(std::fs::read(&new_key).unwrap(), std::fs::read(&key_file).unwrap(), "the server's key file");
    assert!(Path::new(&format!("{}.previous", key_file.display())).exists());
    let id = submit(&env, &["-f", &job_file(&env, "rotated", "test \"$TOKEN\" = other-value-42")]);
    assert_eq!(wait_for_end(&env, &id)["state"], "succeeded", "{}", logs(&env, &id));
    drop(_w);
    env.stop_server();
    env.start_server(&[]);
    let _w = spawn_worker(&env, "w1", &[]);
    let id = submit(&env, &["-f", &job_file(&env, "restarted", "test \"$TOKEN\" = other-value-42")]);
    assert_eq!(wait_for_end(&env, &id)["state"], "succeeded", "{}", logs(&env, &id));
}

/// Acceptance 2: two servers on one PostgreSQL database with different keys: the second
/// refuses to start (exit 78), saying the keys differ.
#[test]
fn a_second_server_with_another_key_refuses_to_start() {
    if !Backend::Postgres.available() {
        return;
    }
    let mut env = Env::on(Backend::Postgres);
    env.start_server(&[]);
    let url = env.database_url().unwrap().to_string();
    let other = env.path("other.key");
    // Any 32 bytes, base64: not the first server's key.
    std::fs::write(&other, "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n").unwrap();
    let o = rota(&env)
        .args(["server", "--listen", "127.0.0.1:0", "--database", &url, "--secret-key-file"])
        .arg(&other)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(78), "{err}");
    assert!(err.contains("secret key mismatch") && err.contains(&other.display().to_string()), "{err}");
}
