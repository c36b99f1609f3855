//! `rapport import patients|appointments FILE`: streams the file through the engine's
//! importer (constant memory) with a progress bar on the terminal.

use crate::Config;
use crate::cli::ImportArgs;
use anyhow::{Context, bail};
use engine::ehr::ApplyContext;
use engine::ehr::import::{ImportKind, ImportOptions, ImportReport};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{BufReader, IsTerminal, Read};
use std::sync::Arc;
use store::{AppStore, EventSource};

/// Counts bytes read, for the progress bar.
struct Counting<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

pub async fn run(
    config: &Config,
    store: Arc<dyn AppStore>,
    args: ImportArgs,
) -> anyhow::Result<ImportReport> {
    let Some(kind) = ImportKind::parse(&args.kind) else {
        bail!("import patients or appointments, not {:?}", args.kind);
    };
    let org = crate::cli::org_by_slug(&*store, &args.org).await?;
    let engine = crate::engine(config, store.clone(), Arc::new(domain::SystemClock))?;
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = if args.quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(size);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {bar:40} {bytes}/{total_bytes} {msg} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    let mut columns = std::collections::HashMap::new();
    for m in &args.map {
        let Some((field, header)) = m.split_once('=') else {
            bail!("--map takes FIELD=HEADER, e.g. --map mrn=\"Chart #\"");
        };
        columns.insert(field.trim().to_owned(), header.trim().to_owned());
    }
    let delimiter = match args.delimiter.as_deref() {
        None => None,
        Some("tab" | "\\t") => Some(b'\t'),
        Some(d) if d.len() == 1 => Some(d.as_bytes()[0]),
        Some(_) => bail!("--delimiter takes one character, or `tab`"),
    };
    let options = ImportOptions {
        dry_run: args.dry_run,
        columns,
        authority: args.authority.clone(),
        delimiter,
    };
    let settings = domain::interface::InterfaceSettings {
        phone_region: org.phone_region.clone(),
        ..Default::default()
    };
    let name = args
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ctx = ApplyContext {
        org,
        source: EventSource {
            kind: "csv".into(),
            reference: Some(name),
        },
        settings,
        now: jiff::Timestamp::now(),
    };
    let reader = Counting {
        inner: BufReader::with_capacity(1 << 16, file),
        bar: bar.clone(),
    };
    let progress_bar = bar.clone();
    let report = engine
        .import_csv(&ctx, kind, reader, &options, move |rows| {
            progress_bar.set_message(format!("{rows} rows"))
        })
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    bar.finish_and_clear();
    eprintln!(
        "{} rows: {} created, {} updated, {} unchanged, {} failed, {} warnings{}",
        report.rows,
        report.created,
        report.updated,
        report.unchanged,
        report.failed,
        report.warning_count,
        if report.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        }
    );
    Ok(report)
}
