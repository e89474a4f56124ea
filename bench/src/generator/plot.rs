//! The latency percentile spectra of one or more reports, drawn as SVG.

use std::path::Path;

use super::report::Report;

/// Renders the latency percentile spectra of `reports` into one SVG: x is the percentile on a log scale of
/// 1/(1 − p) (so 90%, 99%, 99.9% are equally spaced, as in HdrHistogram's plots), y the latency in ms.
pub fn plot(
    reports: &[&Report],
    path: &Path,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use plotters::prelude::*;
    let series: Vec<(String, Vec<(f64, f64)>)> = reports
        .iter()
        .map(|r| {
            let points = r
                .histogram
                .percentiles
                .iter()
                .filter(|p| p.percentile < 100.0)
                .map(|p| (100.0 / (100.0 - p.percentile), p.value_ms))
                .collect();
            (r.label(), points)
        })
        .collect();
    let widest = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(x, _)| *x))
        .fold(100.0_f64, f64::max);
    let x_max = 10f64.powf(widest.log10().ceil());
    let y_max = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(_, y)| *y))
        .fold(0.01_f64, f64::max)
        * 1.1;
    let title = match reports {
        [one] => format!(
            "strata bench {}: latency by percentile",
            one.workload.name()
        ),
        _ => "strata bench: latency by percentile".to_owned(),
    };
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d((1.0..x_max).log_scale(), 0.0..y_max)?;
    let percent = |x: &f64| {
        // Key points of the log axis are powers of ten: 1 → 0%, 10 → 90%, 100 → 99%, 1000 → 99.9%, …
        let nines = x.log10().round() as usize;
        format!("{:.*}%", nines.saturating_sub(2), 100.0 * (1.0 - 1.0 / x))
    };
    chart
        .configure_mesh()
        .x_labels(8)
        .x_label_formatter(&percent)
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .draw()?;
    for (i, (label, points)) in series.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
