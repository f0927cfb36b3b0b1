//! The two text formats `/metrics` speaks, on the data plane and the operator alike. The
//! registry writes OpenMetrics; Prometheus asks for it by name in its `Accept` header and gets
//! it. Every other reader (curl, `promtool check metrics`, most agents) gets the classic
//! Prometheus text format 0.0.4, which differs in how counters are named and in its trailer.

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a scraper's `Accept` header names OpenMetrics (quality values aside: whoever names
/// it can read it).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| {
        accept
            .split(',')
            .any(|range| range.trim().starts_with("application/openmetrics-text"))
    })
}

/// The body and content type for a scraper that sent `accept`, from the registry's OpenMetrics.
pub fn negotiate(accept: Option<&str>, openmetrics: String) -> (&'static str, String) {
    if wants_openmetrics(accept) {
        (OPENMETRICS, openmetrics)
    } else {
        (PROMETHEUS_TEXT, to_prometheus_text(&openmetrics))
    }
}

/// OpenMetrics text to the Prometheus text format 0.0.4: a counter family takes the `_total`
/// name its samples carry, `unknown` is `untyped`, an info family is a gauge named `_info`, and
/// the `# UNIT` and `# EOF` lines and exemplars go.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // The registry writes a family's HELP before its TYPE; the HELP is held until the TYPE says
    // what the family is called in this format.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, help.take(), None);
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" if !family.ends_with("_total") => (format!("{family}_total"), kind),
                "unknown" => (family.to_owned(), "untyped"),
                "info" => (format!("{family}_info"), "gauge"),
                "stateset" => (family.to_owned(), "gauge"),
                "gaugehistogram" => (family.to_owned(), "histogram"),
                _ => (family.to_owned(), kind),
            };
            flush_help(&mut out, help.take(), Some((family, &name)));
            out.push_str("# TYPE ");
            out.push_str(&name);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
            continue;
        }
        flush_help(&mut out, help.take(), None);
        let sample = line.split_once(" # ").map_or(line, |(sample, _)| sample);
        out.push_str(sample);
        out.push('\n');
    }
    flush_help(&mut out, help, None);
    out
}

/// Writes a held HELP line, under the family's new name when `renamed` is (old, new) for it.
fn flush_help(out: &mut String, help: Option<(&str, &str)>, renamed: Option<(&str, &str)>) {
    let Some((family, text)) = help else {
        return;
    };
    let name = match renamed {
        Some((old, new)) if old == family => new,
        _ => family,
    };
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    out.push_str(text);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENMETRICS_BODY: &str = "\
# HELP mg_requests API requests.
# TYPE mg_requests counter
mg_requests_total{code=\"ok\"} 3
# HELP mg_duration_seconds Time taken.
# TYPE mg_duration_seconds histogram
# UNIT mg_duration_seconds seconds
mg_duration_seconds_sum 0.5
mg_duration_seconds_count 1
mg_duration_seconds_bucket{le=\"+Inf\"} 1 # {trace_id=\"abc\"} 0.5
# HELP mg_build Build.
# TYPE mg_build info
mg_build_info{version=\"1\"} 1
# HELP mg_odd Something.
# TYPE mg_odd unknown
mg_odd 2
# EOF
";

    #[test]
    fn counters_take_their_total_name_and_the_openmetrics_only_lines_go() {
        assert_eq!(
            to_prometheus_text(OPENMETRICS_BODY),
            "\
# HELP mg_requests_total API requests.
# TYPE mg_requests_total counter
mg_requests_total{code=\"ok\"} 3
# HELP mg_duration_seconds Time taken.
# TYPE mg_duration_seconds histogram
mg_duration_seconds_sum 0.5
mg_duration_seconds_count 1
mg_duration_seconds_bucket{le=\"+Inf\"} 1
# HELP mg_build_info Build.
# TYPE mg_build_info gauge
mg_build_info{version=\"1\"} 1
# HELP mg_odd Something.
# TYPE mg_odd untyped
mg_odd 2
"
        );
    }

    #[test]
    fn prometheus_gets_openmetrics_and_everyone_else_the_classic_text() {
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.1";
        assert_eq!(
            negotiate(Some(prometheus), OPENMETRICS_BODY.to_owned()),
            (OPENMETRICS, OPENMETRICS_BODY.to_owned())
        );
        for accept in [None, Some("*/*"), Some("text/plain")] {
            let (content_type, body) = negotiate(accept, OPENMETRICS_BODY.to_owned());
            assert_eq!(content_type, PROMETHEUS_TEXT);
            assert!(!body.contains("# EOF"), "{body}");
        }
    }
}
