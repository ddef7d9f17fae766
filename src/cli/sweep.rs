//! `unleash sweep`: seeds x settings as independent tasks, for a batch scheduler's job array
//! (Slurm `--array`, a Kubernetes Indexed Job) or a plain loop. A TOML file names the grid:
//!
//! ```toml
//! out = "runs/sweep"          # optional; relative to this file (default: runs/<file name>)
//! [recipe]                    # optional; every task's settings, as `reproduce`'s flags
//! epochs = 40
//! finetune_epochs = 10
//! [grid]                      # the axes; `seeds` is required
//! seeds = "0..9"
//! mask_ratio = [0.5, 0.7, 0.9]
//! finetune_lr = [0.01, 0.05]
//! ```
//!
//! Task indices are row-major over the `[grid]` keys in the file's order: the first key varies
//! slowest, the last fastest (above: index 0 is seed 0, mask ratio 0.5, lr 0.01; index 1 the same
//! with lr 0.05). A task is `reproduce`'s task ([`run_task`]): its run folder and summary under
//! `out/<setting>/`, shared with no other task, continued where it stopped when run again. The
//! report pools the summaries by setting, with `reproduce`'s tables per setting, and names the
//! tasks that have no summary.

use super::reproduce::{self, ReproduceArgs, SeedSummary, Settings, TaskPlace};
use crate::config::DeviceChoice;
use crate::error::{Error, Result};
use crate::fsio;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Args, Debug, Clone)]
pub struct SweepArgs {
    /// The grid: a TOML file with a [grid] table of axes (`seeds` and any of the [recipe] keys),
    /// an optional [recipe] table (every task's settings) and an optional `out` folder.
    #[arg(long)]
    pub grid: PathBuf,
    /// Print the tasks, one line per index: index, setting, seed, state (done, started, to do).
    #[arg(long, conflicts_with_all = ["index", "report"])]
    pub list: bool,
    /// Run task I (0-based). Without --index, --list or --report the index comes from
    /// SLURM_ARRAY_TASK_ID, else JOB_COMPLETION_INDEX (a Kubernetes Indexed Job).
    #[arg(long, value_name = "I")]
    pub index: Option<usize>,
    /// Merge the tasks' summaries: a report per setting and one for the sweep, naming the tasks
    /// that have none. Exits 0 with tasks missing unless --require-all.
    #[arg(long, conflicts_with = "index")]
    pub report: bool,
    /// With --report: exit non-zero when any task has no summary.
    #[arg(long, requires = "report")]
    pub require_all: bool,
    /// Folder of the tasks and the report (overrides the grid file's `out`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Device of the task run (overrides the recipe's `device`): cpu, gpu or auto.
    #[arg(long)]
    pub device: Option<String>,
}

/// The grid file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GridFile {
    out: Option<PathBuf>,
    #[serde(default)]
    recipe: toml::Table,
    /// Keys with their place in the file: the axes' order fixes the task indices.
    grid: std::collections::BTreeMap<toml::Spanned<String>, toml::Value>,
}

impl GridFile {
    /// The `[grid]` axes in the file's order.
    fn axes_in_file_order(&self) -> Vec<(&str, &toml::Value)> {
        let mut axes: Vec<_> = self.grid.iter().collect();
        axes.sort_by_key(|(k, _)| k.span().start);
        axes.into_iter().map(|(k, v)| (k.get_ref().as_str(), v)).collect()
    }
}

/// One task's settings: `reproduce`'s flags (their defaults where the file is silent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub epochs: usize,
    pub lr: f64,
    pub finetune_epochs: usize,
    pub finetune_lr: f64,
    /// The mask ratio that gives the mask gamma (`reproduce --um-mask-ratio`).
    #[serde(alias = "um_mask_ratio")]
    pub mask_ratio: f64,
    pub gamma_mask: String,
    pub umap_ratio: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_limit: Option<usize>,
    /// A TOML experiment file whose [data] table the tasks train on (default: the sample data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
    pub official_gamma: bool,
    pub device: String,
}

#[derive(clap::Parser)]
struct ReproduceDefaults {
    #[command(flatten)]
    args: ReproduceArgs,
}

impl Recipe {
    /// `reproduce`'s defaults, read off its flags so that the two never drift apart.
    fn defaults() -> Recipe {
        let a = <ReproduceDefaults as clap::Parser>::parse_from(["reproduce"]).args;
        Recipe {
            epochs: a.epochs,
            lr: a.lr,
            finetune_epochs: a.finetune_epochs,
            finetune_lr: a.finetune_lr,
            mask_ratio: a.um_mask_ratio,
            gamma_mask: a.gamma_mask,
            umap_ratio: a.umap_ratio,
            train_limit: a.train_limit,
            config: a.config,
            official_gamma: a.official_gamma,
            device: a.device,
        }
    }

    /// The `reproduce` arguments of this recipe for one seed (folders are the task's own).
    fn reproduce_args(&self, seed: u64) -> ReproduceArgs {
        let a = <ReproduceDefaults as clap::Parser>::parse_from(["reproduce"]).args;
        ReproduceArgs {
            seeds: seed.to_string(),
            epochs: self.epochs,
            lr: self.lr,
            finetune_epochs: self.finetune_epochs,
            finetune_lr: self.finetune_lr,
            um_mask_ratio: self.mask_ratio,
            gamma_mask: self.gamma_mask.clone(),
            umap_ratio: self.umap_ratio,
            device: self.device.clone(),
            train_limit: self.train_limit,
            config: self.config.clone(),
            official_gamma: self.official_gamma,
            ..a
        }
    }
}

/// One task of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub index: usize,
    pub seed: u64,
    /// The setting's axis values (every axis but `seeds`), in the file's order.
    pub values: Vec<(String, toml::Value)>,
    pub recipe: Recipe,
}

impl Task {
    /// The setting's folder name under `out` ("" when `seeds` is the only axis): `key-value`
    /// pairs joined by `_`, e.g. `mask_ratio-0.7_finetune_lr-0.05`.
    pub fn setting_key(&self) -> String {
        let safe = |s: String| s.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect::<String>();
        self.values.iter().map(|(k, v)| safe(format!("{k}-{}", value_text(v)))).collect::<Vec<_>>().join("_")
    }

    /// The setting for people: `mask_ratio 0.7, finetune_lr 0.05` ("the recipe" with no axes).
    pub fn setting_label(&self) -> String {
        if self.values.is_empty() {
            return "the recipe".into();
        }
        self.values.iter().map(|(k, v)| format!("{k} {}", value_text(v))).collect::<Vec<_>>().join(", ")
    }

    /// Where the task writes, under the sweep's folder.
    pub fn place(&self, out: &Path) -> TaskPlace {
        let dir = out.join(self.setting_key());
        TaskPlace { run: dir.join(format!("seed-{}", self.seed)), summary: reproduce::summary_path(&dir.join("summaries"), self.seed) }
    }
}

fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A grid file, read: its tasks in index order and its output folder.
#[derive(Debug, Clone)]
pub struct Grid {
    pub path: PathBuf,
    pub out: PathBuf,
    pub tasks: Vec<Task>,
}

impl Grid {
    /// Reads and checks a grid file: every task's recipe is built here, so a bad value fails
    /// before any task runs, naming the file.
    pub fn load(path: &Path) -> Result<Grid> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
        let file: GridFile = toml::from_str(&text).map_err(|e| Error::bad_data(path, format!("invalid grid file: {e}")))?;
        let here = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let stem = path.file_stem().map_or("sweep".into(), |s| s.to_string_lossy().to_string());
        let out = file.out.as_ref().map_or_else(|| PathBuf::from("runs").join(stem), |o| here.join(o));
        let tasks = expand(&file, here).map_err(|why| Error::bad_data(path, why))?;
        Ok(Grid { path: path.to_path_buf(), out, tasks })
    }

    pub fn task(&self, index: usize) -> Result<&Task> {
        self.tasks.get(index).ok_or_else(|| Error::bad_data(&self.path, format!("has {} tasks (indices 0 to {}); there is no task {index}", self.tasks.len(), self.tasks.len() - 1)))
    }
}

/// The tasks of a grid file: the product of its axes, row-major in the file's key order.
fn expand(file: &GridFile, here: &Path) -> std::result::Result<Vec<Task>, String> {
    let grid = file.axes_in_file_order();
    if grid.iter().any(|(k, _)| *k == "gamma") {
        return Err("[grid] gamma: every task runs both gamma sources (the mask's and the validation-chosen) as paired arms on the same batches, so gamma is not an axis; the report compares them per setting. Vary the mask that gives gamma with gamma_mask = [\"magnitude\", \"random\"] or mask_ratio".into());
    }
    let mut axes: Vec<(String, Vec<toml::Value>)> = Vec::new();
    for (key, value) in grid {
        let values = if key == "seeds" { seed_values(value)? } else { axis_values(key, value)? };
        axes.push((key.to_string(), values));
    }
    if !axes.iter().any(|(k, _)| k == "seeds") {
        return Err("[grid] has no `seeds` axis (give e.g. seeds = \"0..9\" or seeds = [0, 1, 2])".into());
    }
    let count: usize = axes.iter().map(|(_, v)| v.len()).product();
    if count > 100_000 {
        return Err(format!("[grid] makes {count} tasks; split it into smaller sweeps"));
    }
    let defaults = toml::Table::try_from(Recipe::defaults()).map_err(|e| e.to_string())?;
    let mut tasks = Vec::with_capacity(count);
    for index in 0..count {
        let mut table = defaults.clone();
        table.extend(file.recipe.clone());
        let (mut seed, mut values) = (0, Vec::new());
        let mut rest = index;
        // Row-major: the last axis varies fastest.
        let mut picks: Vec<(String, toml::Value)> = axes
            .iter()
            .rev()
            .map(|(k, vals)| {
                let v = vals[rest % vals.len()].clone();
                rest /= vals.len();
                (k.clone(), v)
            })
            .collect();
        picks.reverse();
        for (k, v) in picks {
            if k == "seeds" {
                seed = v.as_integer().and_then(|s| u64::try_from(s).ok()).ok_or("a seed is not a whole number")?;
            } else {
                table.insert(k.clone(), v.clone());
                values.push((k, v));
            }
        }
        let mut recipe: Recipe = table.try_into().map_err(|e| e.to_string().trim().replace('\n', " "))?;
        recipe.config = recipe.config.map(|c| here.join(c));
        tasks.push(Task { index, seed, values, recipe });
    }
    Ok(tasks)
}

/// `seeds = "0..9"` (as `reproduce --seeds`) or `seeds = [0, 1, 2]`.
fn seed_values(value: &toml::Value) -> std::result::Result<Vec<toml::Value>, String> {
    let seeds = match value {
        toml::Value::String(spec) => reproduce::parse_seeds(spec).map_err(|e| format!("[grid] {e}"))?,
        toml::Value::Array(a) if !a.is_empty() => {
            a.iter().map(|v| v.as_integer().and_then(|s| u64::try_from(s).ok()).ok_or(format!("[grid] seeds: {v} is not a seed"))).collect::<std::result::Result<_, _>>()?
        }
        _ => return Err("[grid] seeds: give a range or list, e.g. \"0..9\" or [0, 1, 2]".into()),
    };
    Ok(seeds.into_iter().map(|s| toml::Value::Integer(s as i64)).collect())
}

fn axis_values(key: &str, value: &toml::Value) -> std::result::Result<Vec<toml::Value>, String> {
    match value {
        toml::Value::Array(a) if !a.is_empty() => Ok(a.clone()),
        toml::Value::Array(_) => Err(format!("[grid] {key} is an empty list")),
        _ => Err(format!("[grid] {key}: an axis is a list of values, e.g. {key} = [{value}] (a single value belongs in [recipe])")),
    }
}

pub fn sweep(a: SweepArgs) -> Result<()> {
    let mut grid = Grid::load(&a.grid)?;
    if let Some(out) = &a.out {
        grid.out = out.clone();
    }
    if a.list {
        list(&grid);
        return Ok(());
    }
    if a.report {
        return report(&grid, a.require_all);
    }
    let index = match a.index {
        Some(i) => i,
        None => index_from_env()?,
    };
    run_one(&grid, grid.task(index)?, a.device.as_deref())
}

/// The index a scheduler gives a task of an array: Slurm's, else a Kubernetes Indexed Job's.
fn index_from_env() -> Result<usize> {
    for var in ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"] {
        if let Ok(v) = std::env::var(var) {
            return v.trim().parse().map_err(|_| Error::config(var, format!("'{v}' is not a task index")));
        }
    }
    Err(Error::config("sweep", "give --index I, --list or --report (or run as a job array task: SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX names the index)"))
}

fn settings_of(t: &Task) -> Result<Settings> {
    Settings::of(&t.recipe.reproduce_args(t.seed))
}

fn run_one(grid: &Grid, t: &Task, device: Option<&str>) -> Result<()> {
    let settings = settings_of(t)?;
    settings.check()?;
    let device = DeviceChoice::parse(device.unwrap_or(&t.recipe.device))?;
    eprintln!("task {} of {}: seed {}, {}", t.index, grid.tasks.len(), t.seed, t.setting_label());
    let control = super::commands::ctrl_c_control();
    reproduce::run_task(&settings, t.seed, device, &t.place(&grid.out), &control)
}

fn list(grid: &Grid) {
    eprintln!("{}: {} tasks, row-major over [grid] in file order (the last key varies fastest); folder {}", grid.path.display(), grid.tasks.len(), grid.out.display());
    for t in &grid.tasks {
        let place = t.place(&grid.out);
        let state = if place.summary.exists() {
            "done"
        } else if place.run.join("events.jsonl").exists() {
            "started"
        } else {
            "to do"
        };
        println!("{}\tseed {}\t{}\t{state}", t.index, t.seed, t.setting_label());
    }
}

/// A task without a usable summary, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Missing {
    pub index: usize,
    pub seed: u64,
    pub setting: String,
    pub why: String,
}

/// The finished tasks of one setting.
struct Pool<'a> {
    first: &'a Task,
    settings: Settings,
    summaries: Vec<SeedSummary>,
}

/// Reads every task's summary, pooled by setting (in index order); what is not there is missing.
fn gather(grid: &Grid) -> Result<(Vec<Pool<'_>>, Vec<Missing>)> {
    let mut pools: Vec<Pool> = Vec::new();
    let mut missing = Vec::new();
    for t in &grid.tasks {
        let settings = settings_of(t)?;
        let place = t.place(&grid.out);
        let miss = |why: String| Missing { index: t.index, seed: t.seed, setting: t.setting_label(), why };
        let summary = if !place.summary.exists() {
            Err(miss(if place.run.join("events.jsonl").exists() { "started, not finished (run it again to continue)".into() } else { "not run".into() }))
        } else {
            match reproduce::read_summary_file(&place.summary) {
                Ok(s) if s.settings != settings || s.seed != t.seed => Err(miss(format!("{} was run with other settings than the grid's (remove it to run the task again)", place.summary.display()))),
                Ok(s) => Ok(s),
                Err(e) => Err(miss(e.to_string())),
            }
        };
        let pool = match pools.iter_mut().position(|p| p.first.setting_key() == t.setting_key()) {
            Some(i) => &mut pools[i],
            None => {
                pools.push(Pool { first: t, settings, summaries: Vec::new() });
                pools.last_mut().expect("pushed")
            }
        };
        match summary {
            Ok(s) => pool.summaries.push(s),
            Err(m) => missing.push(m),
        }
    }
    Ok((pools, missing))
}

/// The comparisons of the overview table: the headline ones, at the last epoch.
const OVERVIEW: [usize; 3] = [0, 2, 4];

fn report(grid: &Grid, require_all: bool) -> Result<()> {
    let (pools, missing) = gather(grid)?;
    std::fs::create_dir_all(&grid.out).map_err(|e| Error::io(&grid.out, "create", e))?;
    let finished: usize = pools.iter().map(|p| p.summaries.len()).sum();
    let plural = if pools.len() == 1 { "" } else { "s" };
    let mut md = format!("Sweep `{}`: {finished} of {} tasks finished, {} setting{plural}.\n\n", grid.path.display(), grid.tasks.len(), pools.len());
    if !missing.is_empty() {
        md.push_str("**Tasks without a summary**\n\n| index | seed | setting | why |\n|---|---|---|---|\n");
        for m in &missing {
            md.push_str(&format!("| {} | {} | {} | {} |\n", m.index, m.seed, m.setting, m.why));
        }
        md.push('\n');
    }
    md.push_str("**Overview** (Energy; paired differences of the mean test-OOD AUROC over the setting's seeds, x100: mean ± sd [95% t interval])\n\n| setting | seeds |");
    for k in OVERVIEW {
        md.push_str(&format!(" {} |", reproduce::COMPARISONS[k].0));
    }
    md.push_str("\n|---|---|");
    md.push_str(&"---|".repeat(OVERVIEW.len()));
    md.push('\n');
    let mut settings_json = Vec::new();
    for p in &pools {
        let seeds: Vec<u64> = p.summaries.iter().map(|s| s.seed).collect();
        let paired = if p.summaries.is_empty() { Vec::new() } else { reproduce::paired_differences(&p.summaries) };
        md.push_str(&format!("| {} | {} |", p.first.setting_label(), seeds.len()));
        for k in OVERVIEW {
            let row = paired.iter().find(|r| r.score == "Energy" && r.comparison == reproduce::COMPARISONS[k].0);
            md.push_str(&format!(" {} |", row.map_or("-".into(), |r| fmt_stat(&r.auroc))));
        }
        md.push('\n');
        settings_json.push(serde_json::json!({
            "setting": p.first.setting_label(),
            "folder": grid.out.join(p.first.setting_key()),
            "values": p.first.values.iter().map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default())).collect::<serde_json::Map<_, _>>(),
            "settings": p.settings,
            "seeds": seeds,
            "paired": paired,
        }));
    }
    for p in pools.iter().filter(|p| !p.summaries.is_empty()) {
        let dir = grid.out.join(p.first.setting_key());
        reproduce::write_report(&dir, &p.summaries)?;
        md.push_str(&format!("\n## {} ({} seeds; report in `{}`)\n\n", p.first.setting_label(), p.summaries.len(), dir.join("reproduction.md").display()));
        md.push_str(&reproduce::markdown_report(&p.summaries));
    }
    let json = serde_json::json!({ "grid": grid.path, "tasks": grid.tasks.len(), "finished": finished, "missing": missing, "settings": settings_json });
    let (md_path, json_path) = (grid.out.join("sweep-report.md"), grid.out.join("sweep-report.json"));
    fsio::write_atomic(&md_path, md.as_bytes())?;
    fsio::write_atomic(&json_path, serde_json::to_string_pretty(&json).unwrap_or_default().as_bytes())?;
    println!("{md}");
    println!("wrote {}, {}", md_path.display(), json_path.display());
    for m in &missing {
        eprintln!("missing: task {} (seed {}, {}): {}", m.index, m.seed, m.setting, m.why);
    }
    if require_all && !missing.is_empty() {
        let list = missing.iter().map(|m| m.index.to_string()).collect::<Vec<_>>().join(", ");
        return Err(Error::Other(format!("{} of {} tasks have no summary (--require-all): {list}", missing.len(), grid.tasks.len())));
    }
    Ok(())
}

fn fmt_stat(p: &reproduce::PairedStat) -> String {
    let ci = p.ci95.map_or("n/a".to_string(), |(lo, hi)| format!("[{:+.1}, {:+.1}]", lo * 100.0, hi * 100.0));
    format!("{:+.1} ± {:.1} {ci}", p.mean * 100.0, p.sd * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(text: &str) -> std::result::Result<Vec<Task>, String> {
        let file: GridFile = toml::from_str(text).map_err(|e| e.to_string())?;
        expand(&file, Path::new("/g"))
    }

    #[test]
    fn tasks_are_row_major_over_the_axes_in_file_order() {
        let tasks = grid("[recipe]\nepochs = 3\n[grid]\nmask_ratio = [0.5, 0.9]\nseeds = \"4..6\"\nfinetune_lr = [0.01, 0.05]\n").unwrap();
        assert_eq!(tasks.len(), 12);
        let row = |t: &Task| (t.recipe.mask_ratio, t.seed, t.recipe.finetune_lr);
        assert_eq!(row(&tasks[0]), (0.5, 4, 0.01));
        assert_eq!(row(&tasks[1]), (0.5, 4, 0.05), "the last key varies fastest");
        assert_eq!(row(&tasks[2]), (0.5, 5, 0.01));
        assert_eq!(row(&tasks[6]), (0.9, 4, 0.01), "the first key slowest");
        assert_eq!(row(&tasks[11]), (0.9, 6, 0.05));
        assert!(tasks.iter().enumerate().all(|(i, t)| t.index == i && t.recipe.epochs == 3));
        // What the file does not set is reproduce's default.
        assert_eq!(tasks[0].recipe.finetune_epochs, Recipe::defaults().finetune_epochs);
        assert_eq!(tasks[1].setting_key(), "mask_ratio-0.5_finetune_lr-0.05");
        assert_eq!(tasks[1].setting_label(), "mask_ratio 0.5, finetune_lr 0.05");
        let place = tasks[1].place(Path::new("out"));
        assert_eq!(place.run, Path::new("out/mask_ratio-0.5_finetune_lr-0.05/seed-4"));
        assert_eq!(place.summary, Path::new("out/mask_ratio-0.5_finetune_lr-0.05/summaries/seed-4.json"));
    }

    #[test]
    fn a_seeds_only_grid_is_the_reproduction_with_its_folder_layout() {
        let tasks = grid("[grid]\nseeds = [2, 0]\n").unwrap();
        assert_eq!(tasks.iter().map(|t| t.seed).collect::<Vec<_>>(), vec![2, 0]);
        assert_eq!(tasks[0].recipe, Recipe::defaults());
        assert_eq!(tasks[0].setting_key(), "");
        assert_eq!(tasks[0].place(Path::new("o")).run, Path::new("o/seed-2"));
        // The task's settings are those `reproduce --seeds 2` runs with.
        let a = tasks[0].recipe.reproduce_args(2);
        let b = <ReproduceDefaults as clap::Parser>::parse_from(["reproduce", "--seeds", "2"]).args;
        assert_eq!(Settings::of(&a).unwrap(), Settings::of(&b).unwrap());
        // A data config is relative to the grid file.
        let t = grid("[recipe]\nconfig = \"exp.toml\"\n[grid]\nseeds = [0]\n").unwrap();
        assert_eq!(t[0].recipe.config.as_deref(), Some(Path::new("/g/exp.toml")));
    }

    #[test]
    fn bad_grids_are_refused_with_the_reason() {
        let why = |text: &str| grid(text).unwrap_err();
        assert!(why("[grid]\nmask_ratio = [0.5]\n").contains("no `seeds` axis"));
        assert!(why("[grid]\nseeds = \"0..1\"\ngamma = [\"mask\", \"val\"]\n").contains("gamma is not an axis"));
        assert!(why("[grid]\nseeds = \"0..1\"\nmask_ratio = 0.5\n").contains("an axis is a list"));
        assert!(why("[grid]\nseeds = \"0..1\"\nmask_ratio = []\n").contains("empty list"));
        assert!(why("[grid]\nseeds = \"0..1\"\nbogus = [1]\n").contains("bogus"));
        assert!(why("[grid]\nseeds = \"0..1\"\nepochs = [\"many\"]\n").contains("epochs") || why("[grid]\nseeds = \"0..1\"\nepochs = [\"many\"]\n").contains("invalid type"));
        assert!(why("[grid]\nseeds = \"5..2\"\n").contains("seeds"));
        assert!(why("[grid]\nseeds = [-1]\n").contains("not a seed"));
        assert!(why("[recipe]\nlr = \"fast\"\n[grid]\nseeds = [0]\n").contains("invalid type"));
        assert!(grid("[grid]\nseeds = [0]\n[other]\n").is_err(), "unknown tables are refused");
    }

    #[test]
    fn an_index_past_the_grid_names_the_file_and_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        std::fs::write(&path, "out = \"o\"\n[grid]\nseeds = \"0..2\"\n").unwrap();
        let g = Grid::load(&path).unwrap();
        assert_eq!(g.out, dir.path().join("o"));
        let e = g.task(3).unwrap_err().to_string();
        assert!(e.contains("g.toml") && e.contains("has 3 tasks") && e.contains("no task 3"), "{e}");
        std::fs::write(&path, "[grid\n").unwrap();
        assert!(Grid::load(&path).unwrap_err().to_string().contains("g.toml: invalid grid file"));
    }
}
