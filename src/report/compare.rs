//! Comparing runs: best-so-far curves grouped by strategy (mean and standard error over seeds)
//! and each run's improvement over the average randomly sampled architecture.
//!
//! The random baseline of a run (same space and task) is the mean score of every candidate
//! evaluated by the `random` runs among the inputs; when there are none, it is the mean of
//! the run's own candidates drawn from the grammar (origin `sample`: the random initial
//! population of evolution and BO). The relative improvement is
//! (best - mean_random) / |mean_random|; for a minimised objective its sign is flipped so
//! that a positive value always means better than random. `baseline` names the source used.

use super::data::{self, Report, ReportError};
use super::html::{esc, page, score};
use super::svg::{Chart, Mark, Series, PALETTE};
use crate::search::Origin;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub runs: Vec<RunRow>,
    pub groups: Vec<Group>,
    /// Run folders left out because they cannot be read, with why.
    pub skipped: Vec<Skipped>,
}

/// A run folder that [`load`] could not read.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    pub run: String,
    pub reason: String,
}

/// One run's line in the table (and the CSV).
#[derive(Clone, Debug, Serialize)]
pub struct RunRow {
    pub run: String,
    pub strategy: String,
    pub space: String,
    pub task: String,
    pub seed: u64,
    pub evaluations: u64,
    pub best: Option<f64>,
    pub mean_random: Option<f64>,
    /// `random-runs` (the random runs among the inputs), `own-samples` (the run's own grammar
    /// samples) or `none`.
    pub baseline: String,
    pub relative_improvement: Option<f64>,
    pub elapsed_seconds: f64,
    pub usd: f64,
    /// Best so far after each evaluation.
    #[serde(skip)]
    pub curve: Vec<Option<f64>>,
}

/// The runs of one strategy on one space and task.
#[derive(Clone, Debug, Serialize)]
pub struct Group {
    pub strategy: String,
    pub space: String,
    pub task: String,
    pub runs: usize,
    /// Mean and standard error of best-so-far at each evaluation count, over the runs that
    /// reached it (a finished run's last best carries forward to the longest run's length).
    pub mean: Vec<Option<f64>>,
    pub stderr: Vec<Option<f64>>,
    pub final_mean: Option<f64>,
    pub final_stderr: Option<f64>,
    pub mean_relative_improvement: Option<f64>,
}

/// Reads the run folders and compares them.
/// Runs that cannot be read are left out and named in `skipped` (one damaged run among many
/// must not hide the others); when none can be read, the first error is returned.
pub fn load(dirs: &[PathBuf]) -> Result<Comparison, ReportError> {
    let mut reports = Vec::new();
    let mut skipped = Vec::new();
    let mut first_err = None;
    for d in dirs {
        match data::load(d) {
            Ok(r) => reports.push(r),
            Err(e) => {
                skipped.push(Skipped {
                    run: d.display().to_string(),
                    reason: e.to_string(),
                });
                first_err.get_or_insert(e);
            }
        }
    }
    if reports.is_empty() {
        if let Some(e) = first_err {
            return Err(e);
        }
    }
    let mut c = compare(&reports);
    c.skipped = skipped;
    Ok(c)
}

fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// Standard error of the mean (0 for a single value).
fn stderr(xs: &[f64]) -> Option<f64> {
    let m = mean(xs)?;
    if xs.len() < 2 {
        return Some(0.0);
    }
    let var = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64;
    Some((var / xs.len() as f64).sqrt())
}

pub fn compare(reports: &[Report]) -> Comparison {
    // Mean score of the random runs' candidates, per space and task.
    let mut random: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for r in reports.iter().filter(|r| r.run.strategy == "random") {
        random
            .entry((r.run.space.clone(), r.run.task.clone()))
            .or_default()
            .extend(r.evaluations.iter().filter_map(|e| e.score));
    }
    let mut rows = Vec::with_capacity(reports.len());
    for r in reports {
        let key = (r.run.space.clone(), r.run.task.clone());
        let (mean_random, baseline) = match random.get(&key).and_then(|v| mean(v)) {
            Some(m) => (Some(m), "random-runs"),
            None => {
                let own: Vec<f64> = r
                    .evaluations
                    .iter()
                    .filter(|e| e.origin == Some(Origin::Sample))
                    .filter_map(|e| e.score)
                    .collect();
                match mean(&own) {
                    Some(m) => (Some(m), "own-samples"),
                    None => (None, "none"),
                }
            }
        };
        let best = r.run.best_score;
        let relative_improvement = match (best, mean_random) {
            (Some(b), Some(m)) if m.abs() > 1e-12 => {
                let v = (b - m) / m.abs();
                Some(if r.run.maximize { v } else { -v })
            }
            _ => None,
        };
        rows.push(RunRow {
            run: r.run.id.clone(),
            strategy: r.run.strategy.clone(),
            space: r.run.space.clone(),
            task: r.run.task.clone(),
            seed: r.run.seed,
            evaluations: r.run.evaluations,
            best,
            mean_random,
            baseline: baseline.to_string(),
            relative_improvement,
            elapsed_seconds: r.run.elapsed_seconds,
            usd: r.run.usd,
            curve: r.best_so_far.iter().map(|p| p.best).collect(),
        });
    }
    let mut grouped: BTreeMap<(String, String, String), Vec<&RunRow>> = BTreeMap::new();
    for row in &rows {
        grouped
            .entry((row.strategy.clone(), row.space.clone(), row.task.clone()))
            .or_default()
            .push(row);
    }
    let groups = grouped
        .into_iter()
        .map(|((strategy, space, task), rs)| {
            let len = rs.iter().map(|r| r.curve.len()).max().unwrap_or(0);
            let at = |i: usize| -> Vec<f64> {
                rs.iter()
                    .filter_map(|r| {
                        // Carry a shorter run's last best forward.
                        let c = &r.curve;
                        c.get(i).or(c.last()).copied().flatten()
                    })
                    .collect()
            };
            let mean_curve: Vec<Option<f64>> = (0..len).map(|i| mean(&at(i))).collect();
            let se: Vec<Option<f64>> = (0..len).map(|i| stderr(&at(i))).collect();
            let finals: Vec<f64> = rs.iter().filter_map(|r| r.best).collect();
            let rel: Vec<f64> = rs.iter().filter_map(|r| r.relative_improvement).collect();
            Group {
                strategy,
                space,
                task,
                runs: rs.len(),
                mean: mean_curve,
                stderr: se,
                final_mean: mean(&finals),
                final_stderr: stderr(&finals),
                mean_relative_improvement: mean(&rel),
            }
        })
        .collect();
    Comparison {
        runs: rows,
        groups,
        skipped: Vec::new(),
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v}")).unwrap_or_default()
}

/// The table of runs as CSV.
pub fn csv(c: &Comparison) -> String {
    let mut s = String::from(
        "run,strategy,space,task,seed,evaluations,best,mean_random,baseline,relative_improvement,elapsed_seconds,usd\n",
    );
    let q = |t: &str| {
        if t.contains([',', '"', '\n']) {
            format!("\"{}\"", t.replace('"', "\"\""))
        } else {
            t.to_string()
        }
    };
    for r in &c.runs {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{:.3},{:.6}",
            q(&r.run),
            q(&r.strategy),
            q(&r.space),
            q(&r.task),
            r.seed,
            r.evaluations,
            opt(r.best),
            opt(r.mean_random),
            r.baseline,
            opt(r.relative_improvement),
            r.elapsed_seconds,
            r.usd
        );
    }
    s
}

/// The comparison as an HTML page: one chart per space and task, one line per strategy (mean
/// with a standard-error band, each run faint behind), and the table.
pub fn render(c: &Comparison) -> String {
    let mut b = String::new();
    let _ = writeln!(b, "<h1>archsmith: {} runs compared</h1>", c.runs.len());
    b.push_str("<p class=\"meta\">Best score so far against evaluations: the line is the mean over seeds, the band one standard error either side, faint lines the single runs. Improvement over random = (best - mean random) / |mean random|, where mean random is the mean score of all candidates of the random-strategy runs on the same space and task among these runs, or, without such runs, of the run's own grammar samples (its random initial population); the baseline column says which.</p>");
    let mut by_setting: BTreeMap<(String, String), Vec<(usize, &Group)>> = BTreeMap::new();
    for (k, g) in c.groups.iter().enumerate() {
        by_setting
            .entry((g.space.clone(), g.task.clone()))
            .or_default()
            .push((k, g));
    }
    b.push_str("<div class=\"grid2\">");
    for ((space, task), groups) in &by_setting {
        let mut ch = Chart::new(
            &format!("{space} on {task}"),
            "evaluations",
            "best score so far",
        );
        ch.integer_x = true;
        for (k, g) in groups {
            let color = PALETTE[k % PALETTE.len()];
            for r in c
                .runs
                .iter()
                .filter(|r| r.strategy == g.strategy && &r.space == space && &r.task == task)
            {
                let mut s = Series::new(
                    "",
                    color,
                    Mark::Step,
                    r.curve
                        .iter()
                        .enumerate()
                        .filter_map(|(i, v)| Some((i as f64 + 1.0, (*v)?)))
                        .collect(),
                );
                s.faint = true;
                ch.series.push(s);
            }
            // Best so far holds between evaluations: the band follows the steps.
            let pts = |sign: f64| -> Vec<(f64, f64)> {
                stepped(
                    g.mean
                        .iter()
                        .zip(&g.stderr)
                        .enumerate()
                        .filter_map(|(i, (m, e))| Some((i as f64 + 1.0, (*m)? + sign * (*e)?))),
                )
            };
            if g.runs > 1 {
                ch.series.push(Series::new(
                    "",
                    color,
                    Mark::Band { upper: pts(1.0) },
                    pts(-1.0),
                ));
            }
            ch.series.push(Series::new(
                format!(
                    "{} ({} run{})",
                    g.strategy,
                    g.runs,
                    if g.runs == 1 { "" } else { "s" }
                ),
                color,
                Mark::Line,
                pts(0.0),
            ));
        }
        b += &ch.render();
    }
    b.push_str("</div>");
    b.push_str("<h2>Strategies</h2><table><tr><th>strategy</th><th>space</th><th>task</th><th>runs</th><th>final best (mean &plusmn; s.e.)</th><th>improvement over random (mean)</th></tr>");
    for g in &c.groups {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{} &plusmn; {}</td><td class=\"num\">{}</td></tr>",
            esc(&g.strategy),
            esc(&g.space),
            esc(&g.task),
            g.runs,
            score(g.final_mean),
            score(g.final_stderr),
            pct(g.mean_relative_improvement)
        );
    }
    b.push_str("</table><h2>Runs</h2><table><tr><th>run</th><th>strategy</th><th>seed</th><th>evaluations</th><th>best</th><th>mean random</th><th>baseline</th><th>improvement</th><th>seconds</th><th>$</th></tr>");
    for r in &c.runs {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{:.0}</td><td class=\"num\">{:.4}</td></tr>",
            esc(&r.run),
            esc(&r.strategy),
            r.seed,
            r.evaluations,
            score(r.best),
            score(r.mean_random),
            r.baseline,
            pct(r.relative_improvement),
            r.elapsed_seconds,
            r.usd
        );
    }
    b.push_str("</table>");
    page("archsmith: runs compared", &b)
}

/// A step function's corners: each value holds until the next point's x.
fn stepped(points: impl Iterator<Item = (f64, f64)>) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (x, y) in points {
        if let Some(&(_, last)) = out.last() {
            out.push((x, last));
        }
        out.push((x, y));
    }
    out
}

fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:+.1}%", 100.0 * v))
        .unwrap_or_else(|| "-".into())
}

/// The folders among `paths` that are runs; a folder of runs expands to its runs.
pub fn expand(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.join("journal.jsonl").is_file() {
            out.push(p.clone());
        } else if let Ok(rd) = std::fs::read_dir(p) {
            let mut sub: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|d: &PathBuf| Path::new(d).join("journal.jsonl").is_file())
                .collect();
            sub.sort();
            out.extend(sub);
        } else {
            out.push(p.clone());
        }
    }
    out
}
