//! The report as one self-contained HTML file: inline CSS, inline SVG charts, no scripts, no
//! fonts, no links to fetch. It opens offline and can be mailed or archived as it is.

use super::data::{Report, CURVES};
use super::svg::{stacked_bars, Chart, Mark, Series, PALETTE};
use std::fmt::Write as _;

pub const CSS: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{font-size:1.5em;margin-bottom:4px}h2{font-size:1.15em;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;margin:2px 0}.grid2{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.chart{background:#fff;border:1px solid #e3e3e3;border-radius:4px;max-width:100%;height:auto}
.chart .ct{font-size:13px;font-weight:600;text-anchor:middle}
.chart .xt{font-size:10px;text-anchor:middle;fill:#444}.chart .yt{font-size:10px;text-anchor:end;fill:#444}
.chart .xl,.chart .yl{font-size:11px;text-anchor:middle;fill:#333}.chart .lg{font-size:11px;fill:#333}
.chart .grid{stroke:#eee}.chart .frame{fill:none;stroke:#bbb}.chart .diag{stroke:#999;stroke-dasharray:4 3}
.chart .empty{font-size:12px;text-anchor:middle;fill:#888}
table{border-collapse:collapse;font-size:13px;width:100%}th,td{border-bottom:1px solid #eee;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f6f6f6}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code{font-family:ui-monospace,'SFMono-Regular',Menlo,monospace;font-size:12px;word-break:break-all}
.plan{color:#444;font-style:italic}.note{color:#666;font-size:13px}
";

pub use crate::text::{escape_markup as esc, score};

/// The page around a body.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title><style>{CSS}</style></head><body>\n{body}\n<p class=\"note\">Made by archsmith {}. This file is self-contained: it loads nothing from the network.</p></body></html>\n",
        esc(title),
        env!("CARGO_PKG_VERSION")
    )
}

/// A run's report as an HTML page.
pub fn render(r: &Report) -> String {
    let mut b = String::new();
    let i = &r.run;
    let _ = writeln!(b, "<h1>archsmith run {}</h1>", esc(&i.id));
    let _ = writeln!(
        b,
        "<p class=\"meta\">strategy <b>{}</b> &middot; space <b>{}</b> &middot; task <b>{}</b> &middot; seed {} &middot; objective: {}</p>",
        esc(&i.strategy),
        esc(&i.space),
        esc(&i.task),
        i.seed,
        if i.maximize { "maximise" } else { "minimise" }
    );
    if i.model_driven {
        let _ = writeln!(
            b,
            "<p class=\"meta\">where the proposals came from: {}{}</p>",
            esc(&i.sources.describe()),
            if i.sources.by_model() == 0 {
                " &middot; <b>the model proposed no valid candidate: this run was a random search</b>"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(
        b,
        "<p class=\"meta\">status <b>{}</b> ({}) &middot; {} session(s) &middot; {} proposals, {} invalid &middot; {} evaluations, {} failed &middot; {:.0} s &middot; {} model calls, {} tokens, ${:.4}</p>",
        esc(i.status.name()),
        esc(&i.reason),
        i.sessions,
        i.proposals,
        i.invalid,
        i.evaluations,
        i.failed,
        i.elapsed_seconds,
        i.model_calls,
        i.tokens,
        i.usd
    );
    if let (Some(h), Some(s)) = (&i.best_hash, i.best_score) {
        let text = r
            .top
            .first()
            .map(|t| t.candidate.as_str())
            .unwrap_or_default();
        let _ = writeln!(
            b,
            "<p class=\"meta\">best <b>{s:.4}</b> ({}): <code>{}</code></p>",
            esc(h),
            esc(text)
        );
    }

    b.push_str("<h2>Progress</h2><div class=\"grid2\">");
    let best_evals: Vec<(f64, f64)> = r
        .best_so_far
        .iter()
        .filter_map(|p| Some((p.evaluations as f64, p.best?)))
        .collect();
    let best_time: Vec<(f64, f64)> = r
        .best_so_far
        .iter()
        .filter_map(|p| Some((p.elapsed_seconds, p.best?)))
        .collect();
    let all_evals: Vec<(f64, f64)> = r
        .evaluations
        .iter()
        .enumerate()
        .filter_map(|(k, e)| Some((k as f64 + 1.0, e.score?)))
        .collect();
    let mut c = Chart::new("Best score so far", "evaluations", "score");
    c.integer_x = true;
    c.series.push(Series::new(
        "each evaluation",
        "#999999",
        Mark::Points,
        all_evals,
    ));
    c.series.push(Series::new(
        "best so far",
        PALETTE[0],
        Mark::Step,
        best_evals,
    ));
    b += &c.render();
    let mut c = Chart::new("Best score against wall time", "seconds", "score");
    c.series.push(Series::new(
        "best so far",
        PALETTE[1],
        Mark::Step,
        best_time,
    ));
    b += &c.render();
    b.push_str("</div>");

    b.push_str("<h2>Score against size</h2><div class=\"grid2\">");
    for (what, front, cost) in [
        (
            "parameters",
            &r.front_params,
            Box::new(|e: &super::data::Evaluated| e.params as f64) as Box<dyn Fn(_) -> f64>,
        ),
        (
            "FLOPs",
            &r.front_flops,
            Box::new(|e: &super::data::Evaluated| e.flops as f64),
        ),
    ] {
        let mut c = Chart::new(&format!("Score against {what}"), what, "score");
        c.log_x = true;
        let scored: Vec<&super::data::Evaluated> =
            r.evaluations.iter().filter(|e| e.score.is_some()).collect();
        let mut all = Series::new(
            "candidate",
            PALETTE[5],
            Mark::Points,
            scored
                .iter()
                .map(|e| (cost(e), e.score.unwrap_or(0.0)))
                .collect(),
        );
        all.labels = scored
            .iter()
            .map(|e| format!("{} {} {}", e.hash, score(e.score), e.candidate))
            .collect();
        c.series.push(all);
        let on: Vec<&super::data::Evaluated> = front
            .iter()
            .filter_map(|h| scored.iter().find(|e| &e.hash == h).copied())
            .collect();
        let pts: Vec<(f64, f64)> = on
            .iter()
            .map(|e| (cost(e), e.score.unwrap_or(0.0)))
            .collect();
        c.series
            .push(Series::new("", PALETTE[1], Mark::Step, pts.clone()));
        let mut f = Series::new("Pareto front", PALETTE[1], Mark::Points, pts);
        f.emphasis = true;
        f.labels = on
            .iter()
            .map(|e| format!("{} {} {}", e.hash, score(e.score), e.candidate))
            .collect();
        c.series.push(f);
        b += &c.render();
    }
    b.push_str("</div>");

    b.push_str("<h2>Learning curves of the best candidates</h2>");
    let mut c = Chart::new("Validation score by epoch", "epoch", "score");
    c.integer_x = true;
    for (k, t) in r.top.iter().take(CURVES).enumerate() {
        let pts = t
            .curve
            .iter()
            .enumerate()
            .map(|(e, s)| (e as f64 + 1.0, *s))
            .collect();
        c.series.push(Series::new(
            format!("#{} {}", k + 1, t.hash),
            PALETTE[k % PALETTE.len()],
            Mark::Line,
            pts,
        ));
    }
    b += &c.render();

    if i.model_driven || !r.usage.is_empty() {
        b.push_str("<h2>The language model</h2><div class=\"grid2\">");
        let rows: Vec<(String, Vec<u64>)> = r
            .rounds
            .iter()
            .map(|x| {
                (
                    format!("step {}", x.round),
                    vec![
                        x.valid,
                        x.repaired,
                        x.sampled,
                        x.duplicate,
                        x.invalid,
                        x.skipped,
                    ],
                )
            })
            .collect();
        b += &stacked_bars(
            "Proposals per step",
            &[
                "valid",
                "repaired",
                "random sample",
                "duplicate",
                "rejected",
                "skipped",
            ],
            &rows,
        );
        let mut c = Chart::new("Predicted against achieved", "achieved score", "predicted");
        c.diagonal = true;
        let mut p = Series::new(
            "proposal",
            PALETTE[2],
            Mark::Points,
            r.predictions
                .iter()
                .map(|p| (p.achieved, p.predicted))
                .collect(),
        );
        p.labels = r.predictions.iter().map(|p| p.hash.clone()).collect();
        c.series.push(p);
        b += &c.render();
        let mut c = Chart::new(
            "Tokens over model calls",
            "model call",
            "tokens (cumulative)",
        );
        c.integer_x = true;
        c.series.push(Series::new(
            "tokens",
            PALETTE[0],
            Mark::Line,
            r.usage
                .iter()
                .map(|u| (u.call as f64, u.tokens as f64))
                .collect(),
        ));
        b += &c.render();
        let mut c = Chart::new(
            "Cost over model calls",
            "model call",
            "US dollars (cumulative)",
        );
        c.integer_x = true;
        c.series.push(Series::new(
            "cost",
            PALETTE[3],
            Mark::Line,
            r.usage.iter().map(|u| (u.call as f64, u.usd)).collect(),
        ));
        b += &c.render();
        b.push_str("</div>");
    }

    b.push_str("<h2>Lineage of the best candidate</h2>");
    if r.lineage.is_empty() {
        b.push_str("<p class=\"note\">No candidate has a score yet.</p>");
    } else {
        b.push_str("<table><tr><th>generation</th><th>hash</th><th>score</th><th>origin</th><th>parents</th><th>candidate and plan</th></tr>");
        for a in &r.lineage {
            let _ = write!(
                b,
                "<tr><td class=\"num\">{}</td><td><code>{}</code></td><td class=\"num\">{}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code>{}</td></tr>",
                a.generation,
                esc(&a.hash),
                score(a.score),
                a.origin.map(origin_name).unwrap_or("-"),
                esc(&a.parents.join(" ")),
                esc(&a.candidate),
                plan_html(a.plan.as_deref())
            );
        }
        b.push_str("</table>");
    }

    b.push_str("<h2>Top candidates</h2>");
    b.push_str("<table><tr><th>#</th><th>score</th><th>params</th><th>FLOPs</th><th>epochs</th><th>hash</th><th>origin</th><th>candidate and plan</th></tr>");
    for (k, t) in r.top.iter().enumerate() {
        let _ = write!(
            b,
            "<tr><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}{}</td><td><code>{}</code></td><td>{}</td><td><code>{}</code>{}</td></tr>",
            k + 1,
            score(t.score),
            t.params,
            super::svg::short_num(t.flops as f64),
            t.epochs,
            if t.stopped_early { " (stopped)" } else { "" },
            esc(&t.hash),
            t.origin.map(origin_name).unwrap_or("-"),
            esc(&t.candidate),
            plan_html(t.plan.as_deref())
        );
    }
    b.push_str("</table>");
    page(&format!("archsmith run {}", i.id), &b)
}

fn plan_html(p: Option<&str>) -> String {
    p.map(|p| format!("<div class=\"plan\">plan: {}</div>", esc(p)))
        .unwrap_or_default()
}

pub fn origin_name(o: crate::search::Origin) -> &'static str {
    use crate::search::Origin::*;
    match o {
        Sample => "sample",
        Seed => "seed",
        Mutation => "mutation",
        Crossover => "crossover",
        Model => "model",
        Repair => "repair",
    }
}
