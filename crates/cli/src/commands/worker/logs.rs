//! `rota worker logs [-f] [-n N] [--node N]`: the background worker's log file (its saved
//! `--log-path`), byte for byte; `-f` keeps printing what is appended until interrupted.

use crate::args::WorkerLogsArgs;
use crate::output::Out;
use anyhow::{Context, Result};
use rota_lifecycle::logtail;
use rota_lifecycle::paths::{Dirs, Instance};
use rota_lifecycle::saved;
use std::io::{Read, Seek, SeekFrom};
use std::process::ExitCode;
use std::time::Duration;

pub(super) fn logs(args: &WorkerLogsArgs) -> Result<ExitCode> {
    let instance = match &args.node {
        Some(n) => Instance::node(n)?,
        None => Instance::profile(args.profile.profile.as_deref())?,
    };
    let dirs = Dirs::from_env()?;
    let paths = dirs.instance(&instance);
    let mut notes = Vec::new();
    let path = saved::load(&paths, &mut notes)?.map_or(paths.default_log.clone(), |m| m.log_path);
    let mut out = Out::new();
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !args.follow => {
            crate::output::note(format_args!("no log yet at {}", path.display()));
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    let mut pos = match args.lines {
        Some(n) => {
            for line in logtail::tail(&path, 0, n) {
                writeln!(out, "{line}")?;
            }
            logtail::len(&path)
        }
        None => 0,
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        file.seek(SeekFrom::Start(pos)).context("cannot read the log")?;
        loop {
            let n = file.read(&mut buf).context("cannot read the log")?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
            pos += n as u64;
        }
        out.flush()?;
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(200));
        // Truncated (copytruncate): start over.
        if logtail::len(&path) < pos {
            pos = 0;
        }
    }
}
