//! SVG plots for the training and evaluation reports: ROC and precision–recall curves
//! (or any lines over the unit square) and histograms (e.g. of the lead time of warnings).
//!
//! Each function returns a complete 640×480 SVG document as a `String`; callers decide where
//! it goes (a report folder, an HTML page). plotters draws it with its SVG backend only, so
//! no font stack or system library is needed: text is left to the viewer's `sans-serif`.
//!
//! ```
//! use pmi_models::plots::{line_plot_svg, Series};
//!
//! let roc = [(0.0, 0.0), (0.1, 0.7), (0.4, 0.9), (1.0, 1.0)];
//! let svg = line_plot_svg(
//!     "ROC",
//!     "false-positive rate",
//!     "true-positive rate",
//!     &[Series { label: "isolation forest", points: &roc }],
//!     true,
//! )?;
//! assert!(svg.starts_with("<svg") && svg.contains("isolation forest"));
//! # Ok::<(), pmi_models::ModelError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt::Display;
use std::ops::Range;

use plotters::backend::SVGBackend;
use plotters::prelude::*;

use crate::ModelError;

/// Width and height of every plot, in pixels.
pub const SIZE: (u32, u32) = (640, 480);

/// Most bins a histogram may have: more would not be readable and would bloat the SVG.
pub const MAX_BINS: usize = 10_000;

/// Fill colour of histogram bars (steel blue).
const BAR: RGBColor = RGBColor(70, 130, 180);

/// Colour of the chance line.
const CHANCE: RGBColor = RGBColor(150, 150, 150);

/// One line of a [`line_plot_svg`]: its legend label and its points, drawn in order.
#[derive(Clone, Copy, Debug)]
pub struct Series<'a> {
    /// The legend entry (an empty label leaves the line out of the legend).
    pub label: &'a str,
    /// (x, y) points, joined in the given order.
    pub points: &'a [(f64, f64)],
}

/// A line plot of `series` with a legend, for ROC and precision–recall curves.
///
/// The axes span 0 to 1, widened to take in any point outside the unit square. With
/// `diagonal`, the chance line from (0, 0) to (1, 1) is drawn dashed (a ROC curve of random
/// scores). Fails with [`ModelError::InvalidData`] on a non-finite point (field `series`)
/// or when plotters cannot draw (field `plot`).
pub fn line_plot_svg(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
    diagonal: bool,
) -> Result<String, ModelError> {
    let points = || series.iter().flat_map(|s| s.points.iter());
    if let Some(s) = series.iter().find(|s| {
        s.points
            .iter()
            .any(|(x, y)| !x.is_finite() || !y.is_finite())
    }) {
        return Err(ModelError::data(
            "series",
            format!("series `{}` has a non-finite point", s.label),
        ));
    }
    let x_range = span(points().map(|p| p.0));
    let y_range = span(points().map(|p| p.1));

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(x_range, y_range)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()
            .map_err(plot_error)?;
        if diagonal {
            let style = ShapeStyle::from(&CHANCE).stroke_width(1);
            chart
                .draw_series(DashedLineSeries::new([(0.0, 0.0), (1.0, 1.0)], 6, 4, style))
                .map_err(plot_error)?
                .label("chance")
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        }
        for (i, s) in series.iter().enumerate() {
            let style = Palette99::pick(i).stroke_width(2);
            let drawn = chart
                .draw_series(LineSeries::new(s.points.iter().copied(), style))
                .map_err(plot_error)?;
            if !s.label.is_empty() {
                drawn
                    .label(s.label)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
            }
        }
        if diagonal || series.iter().any(|s| !s.label.is_empty()) {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(plot_error)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// A histogram of `values` in bins of `bin_width` aligned on multiples of it
/// (bin k holds [k·w, (k + 1)·w)), one bar per non-empty bin, y the count; e.g. the lead
/// time of warnings in hours with `bin_width` 1.
///
/// Empty `values` still draw the (empty) axes. Fails with [`ModelError::InvalidData`] when
/// `bin_width` is not a positive finite number or would give more than [`MAX_BINS`] bins
/// (field `bin_width`), on a non-finite value (field `values`), or when plotters cannot
/// draw (field `plot`).
pub fn histogram_svg(
    title: &str,
    x_label: &str,
    values: &[f64],
    bin_width: f64,
) -> Result<String, ModelError> {
    if !(bin_width.is_finite() && bin_width > 0.0) {
        return Err(ModelError::data(
            "bin_width",
            format!("must be a positive number, is {bin_width}"),
        ));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(ModelError::data(
            "values",
            format!("value {i} is {}", values[i]),
        ));
    }
    let bin = |v: f64| (v / bin_width).floor();
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(bin(v)), hi.max(bin(v)))
        });
    if hi - lo >= MAX_BINS as f64 {
        return Err(ModelError::data(
            "bin_width",
            format!(
                "{bin_width} gives more than {MAX_BINS} bins for values from {lo} to {hi} bins"
            ),
        ));
    }
    // Counts per bin index, relative to the lowest bin (so they fit an integer).
    let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
    for &v in values {
        *counts.entry((bin(v) - lo) as u32).or_default() += 1;
    }
    let (x_range, y_max) = if values.is_empty() {
        (0.0..1.0, 1.0)
    } else {
        let max_count = counts.values().copied().max().unwrap_or(1);
        (
            lo * bin_width..(hi + 1.0) * bin_width,
            f64::from(max_count) * 1.05,
        )
    };

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(x_range, 0.0..y_max)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(x_label)
            .y_desc("count")
            .draw()
            .map_err(plot_error)?;
        chart
            .draw_series(counts.iter().map(|(&k, &n)| {
                let x0 = (lo + f64::from(k)) * bin_width;
                Rectangle::new([(x0, 0.0), (x0 + bin_width, f64::from(n))], BAR.filled())
            }))
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// The range from min(0, values) to max(1, values).
fn span(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = values.fold((0.0f64, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    lo..hi
}

/// A plotters failure as [`ModelError::InvalidData`] of field `plot`.
fn plot_error(e: impl Display) -> ModelError {
    ModelError::data("plot", e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bars(svg: &str) -> usize {
        // Each bar is one filled <rect> in the bar colour (the background is white).
        svg.split("<rect")
            .skip(1)
            .filter(|tag| {
                tag.split('>')
                    .next()
                    .unwrap_or("")
                    .contains("fill=\"#4682B4\"")
            })
            .count()
    }

    #[test]
    fn line_plot_has_title_legend_and_lines() {
        let roc = [(0.0, 0.0), (0.2, 0.8), (1.0, 1.0)];
        let pr = [(0.0, 1.0), (0.5, 0.9), (1.0, 0.3)];
        let svg = line_plot_svg(
            "ROC of the validation set",
            "false-positive rate",
            "true-positive rate",
            &[
                Series {
                    label: "forest",
                    points: &roc,
                },
                Series {
                    label: "rules",
                    points: &pr,
                },
            ],
            true,
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("width=\"640\"") && svg.contains("height=\"480\""));
        for text in [
            "ROC of the validation set",
            "false-positive rate",
            "true-positive rate",
            "forest",
            "rules",
            "chance",
        ] {
            assert!(
                svg.contains(&format!(">{text}")) || svg.contains(text),
                "{text}"
            );
        }
        // Two series, the dashed diagonal, and the three legend samples are paths.
        assert!(svg.matches("<polyline").count() + svg.matches("<path").count() >= 5);
    }

    #[test]
    fn line_plot_without_labels_or_diagonal_has_no_legend() {
        let svg = line_plot_svg(
            "t",
            "x",
            "y",
            &[Series {
                label: "",
                points: &[(0.0, 0.0), (1.0, 1.0)],
            }],
            false,
        )
        .unwrap();
        assert!(!svg.contains("chance"));
        // Empty input draws empty axes.
        let empty = line_plot_svg("empty", "x", "y", &[], false).unwrap();
        assert!(empty.starts_with("<svg") && empty.contains("empty"));
    }

    #[test]
    fn line_plot_rejects_non_finite_points() {
        let err = line_plot_svg(
            "t",
            "x",
            "y",
            &[Series {
                label: "bad",
                points: &[(0.0, f64::NAN)],
            }],
            false,
        )
        .unwrap_err();
        assert!(matches!(err, ModelError::InvalidData { field, .. } if field == "series"));
    }

    #[test]
    fn histogram_draws_one_bar_per_non_empty_bin() {
        // Bins of 1 h: [0,1) ×2, [1,2) ×1, [3,4) ×3, [10,11) ×1 → 4 bars.
        let values = [0.2, 0.9, 1.5, 3.0, 3.3, 3.99, 10.0];
        let svg = histogram_svg("Lead time", "hours before failure", &values, 1.0).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("Lead time") && svg.contains("hours before failure"));
        assert_eq!(bars(&svg), 4);
        // Wider bins merge them: [0,4) ×6, [8,12) ×1.
        let svg = histogram_svg("Lead time", "hours", &values, 4.0).unwrap();
        assert_eq!(bars(&svg), 2);
        // Negative values fall in negative bins: [−0.5, −0.25), [−0.25, 0), [0, 0.25).
        let svg = histogram_svg("t", "x", &[-0.5, -0.1, 0.1, 0.2], 0.25).unwrap();
        assert_eq!(bars(&svg), 3);
    }

    #[test]
    fn empty_histogram_draws_axes() {
        let svg = histogram_svg("No warnings", "hours", &[], 1.0).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("No warnings"));
        assert_eq!(bars(&svg), 0);
    }

    #[test]
    fn histogram_rejects_bad_input() {
        let field = |r: Result<String, ModelError>| match r.unwrap_err() {
            ModelError::InvalidData { field, .. } => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(histogram_svg("t", "x", &[1.0], 0.0)), "bin_width");
        assert_eq!(
            field(histogram_svg("t", "x", &[1.0], f64::NAN)),
            "bin_width"
        );
        assert_eq!(
            field(histogram_svg("t", "x", &[0.0, 1e9], 1.0)),
            "bin_width"
        );
        assert_eq!(field(histogram_svg("t", "x", &[f64::NAN], 1.0)), "values");
    }
}
