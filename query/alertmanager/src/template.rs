//! The small part of Alertmanager's Go templating that notification fields use: literal text,
//! field references (`{{ .Status }}`, `{{ .CommonLabels.severity }}`, `{{ .GroupLabels.x }}`,
//! `{{ .CommonAnnotations.summary }}`, `{{ .Alerts.Firing | len }}`), and the default
//! templates by name (`{{ template "slack.default.title" . }}`), rendered as Alertmanager's
//! default.tmpl renders them. Anything else is rejected when the config loads, so a template
//! never fails at notification time. Owns parsing and rendering; not which field uses what.

use std::collections::BTreeMap;

use storage::Labels;

/// The data a notification is rendered from (Alertmanager's template.Data).
pub(crate) struct Data {
    pub receiver: String,
    pub status: &'static str,
    pub alerts: Vec<AlertData>,
    pub group_labels: Labels,
    pub common_labels: Labels,
    pub common_annotations: BTreeMap<String, String>,
    pub external_url: String,
}

pub(crate) struct AlertData {
    pub firing: bool,
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub generator_url: String,
}

#[derive(Clone, Debug)]
pub(crate) struct Template(Vec<Part>);

#[derive(Clone, Debug)]
enum Part {
    Lit(String),
    Receiver,
    Status,
    StatusUpper,
    ExternalUrl,
    GroupLabel(String),
    CommonLabel(String),
    CommonAnnotation(String),
    CountAll,
    CountFiring,
    CountResolved,
    Named(Named),
    /// `__text_alert_list` over only the firing or only the resolved alerts.
    AlertList {
        firing: bool,
    },
    SlackColor,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Named {
    Alertmanager,
    AlertmanagerUrl,
    Subject,
    Empty,
    TextAlertList,
    SlackFallback,
}

fn named(name: &str) -> Option<Named> {
    Some(match name {
        "__alertmanager" | "slack.default.username" | "pagerduty.default.client" => {
            Named::Alertmanager
        }
        "__alertmanagerURL" | "slack.default.titlelink" | "pagerduty.default.clientURL" => {
            Named::AlertmanagerUrl
        }
        "__subject"
        | "slack.default.title"
        | "pagerduty.default.description"
        | "email.default.subject" => Named::Subject,
        "__description"
        | "slack.default.pretext"
        | "slack.default.text"
        | "slack.default.footer"
        | "slack.default.iconemoji"
        | "slack.default.iconurl"
        | "slack.default.callbackid" => Named::Empty,
        "__text_alert_list" | "pagerduty.default.instances" | "email.default.html" => {
            Named::TextAlertList
        }
        "slack.default.fallback" => Named::SlackFallback,
        _ => return None,
    })
}

impl Template {
    pub(crate) fn parse(src: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = src;
        let mut trim_next = false;
        while let Some(open) = rest.find("{{") {
            let mut lit = &rest[..open];
            if trim_next {
                lit = lit.trim_start();
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("template {src:?}: unclosed action"))?;
            let mut action = &after[..close];
            if let Some(a) = action.strip_prefix('-') {
                lit = lit.trim_end();
                action = a;
            }
            trim_next = false;
            if let Some(a) = action.strip_suffix('-') {
                trim_next = true;
                action = a;
            }
            if !lit.is_empty() {
                parts.push(Part::Lit(lit.to_owned()));
            }
            parts.push(parse_action(action.trim()).ok_or_else(|| {
                format!(
                    "template {src:?}: unsupported action {{{{ {} }}}} (novamon supports field references such as .Status, .CommonLabels.name, .Alerts.Firing | len, and the default templates by name)",
                    action.trim()
                )
            })?);
            rest = &after[close + 2..];
        }
        let lit = if trim_next { rest.trim_start() } else { rest };
        if !lit.is_empty() {
            parts.push(Part::Lit(lit.to_owned()));
        }
        Ok(Template(parts))
    }

    /// A template that is one of the defaults by name.
    pub(crate) fn default_named(name: &str) -> Template {
        Template(vec![Part::Named(named(name).unwrap_or(Named::Empty))])
    }

    /// Slack's default colour: `danger` while firing, `good` once resolved.
    pub(crate) fn slack_color() -> Template {
        Template(vec![Part::SlackColor])
    }

    pub(crate) fn firing_list() -> Template {
        Template(vec![Part::AlertList { firing: true }])
    }

    pub(crate) fn resolved_list() -> Template {
        Template(vec![Part::AlertList { firing: false }])
    }

    pub(crate) fn render(&self, d: &Data) -> String {
        let mut out = String::new();
        for p in &self.0 {
            render_part(p, d, &mut out);
        }
        out
    }
}

fn parse_action(a: &str) -> Option<Part> {
    let words: Vec<&str> = a.split_whitespace().collect();
    Some(match words.as_slice() {
        [".Receiver"] => Part::Receiver,
        [".Status"] => Part::Status,
        [".Status", "|", "toUpper"] => Part::StatusUpper,
        [".ExternalURL"] => Part::ExternalUrl,
        [".Alerts", "|", "len"] | ["len", ".Alerts"] => Part::CountAll,
        [".Alerts.Firing", "|", "len"] | ["len", ".Alerts.Firing"] => Part::CountFiring,
        [".Alerts.Resolved", "|", "len"] | ["len", ".Alerts.Resolved"] => Part::CountResolved,
        ["template", name, "."] => Part::Named(named(name.strip_prefix('"')?.strip_suffix('"')?)?),
        [field] => {
            let (kind, name) = field.strip_prefix('.')?.split_once('.')?;
            let name = name.to_owned();
            match kind {
                "GroupLabels" => Part::GroupLabel(name),
                "CommonLabels" => Part::CommonLabel(name),
                "CommonAnnotations" => Part::CommonAnnotation(name),
                _ => return None,
            }
        }
        _ => return None,
    })
}

fn render_part(p: &Part, d: &Data, out: &mut String) {
    let firing = d.alerts.iter().filter(|a| a.firing).count();
    match p {
        Part::Lit(s) => out.push_str(s),
        Part::Receiver => out.push_str(&d.receiver),
        Part::Status => out.push_str(d.status),
        Part::StatusUpper => out.push_str(&d.status.to_uppercase()),
        Part::ExternalUrl => out.push_str(&d.external_url),
        Part::GroupLabel(n) => out.push_str(d.group_labels.get(n).unwrap_or("")),
        Part::CommonLabel(n) => out.push_str(d.common_labels.get(n).unwrap_or("")),
        Part::CommonAnnotation(n) => {
            out.push_str(d.common_annotations.get(n).map_or("", |s| s.as_str()))
        }
        Part::CountAll => out.push_str(&d.alerts.len().to_string()),
        Part::CountFiring => out.push_str(&firing.to_string()),
        Part::CountResolved => out.push_str(&(d.alerts.len() - firing).to_string()),
        Part::Named(n) => render_named(*n, d, out),
        Part::SlackColor => out.push_str(if d.status == "firing" {
            "danger"
        } else {
            "good"
        }),
        Part::AlertList { firing } => out.push_str(&text_alert_list(
            d.alerts.iter().filter(|a| a.firing == *firing),
        )),
    }
}

fn render_named(n: Named, d: &Data, out: &mut String) {
    match n {
        Named::Alertmanager => out.push_str("Alertmanager"),
        Named::AlertmanagerUrl => {
            let receiver: String = form_urlencoded::byte_serialize(d.receiver.as_bytes()).collect();
            out.push_str(&format!("{}/#/alerts?receiver={receiver}", d.external_url));
        }
        Named::Subject => out.push_str(&subject(d)),
        Named::Empty => {}
        Named::TextAlertList => out.push_str(&text_alert_list(d.alerts.iter())),
        Named::SlackFallback => {
            render_named(Named::Subject, d, out);
            out.push_str(" | ");
            render_named(Named::AlertmanagerUrl, d, out);
        }
    }
}

/// default.tmpl's `__subject`: `[FIRING:2] <group label values> (<other common label values>)`.
fn subject(d: &Data) -> String {
    let mut s = format!("[{}", d.status.to_uppercase());
    if d.status == "firing" {
        let firing = d.alerts.iter().filter(|a| a.firing).count();
        s.push_str(&format!(":{firing}"));
    }
    s.push_str("] ");
    let group: Vec<&str> = d.group_labels.iter().map(|l| l.value.as_str()).collect();
    s.push_str(&group.join(" "));
    s.push(' ');
    if d.common_labels.len() > d.group_labels.len() {
        let rest: Vec<&str> = d
            .common_labels
            .iter()
            .filter(|l| d.group_labels.get(&l.name).is_none())
            .map(|l| l.value.as_str())
            .collect();
        s.push_str(&format!("({})", rest.join(" ")));
    }
    s
}

/// default.tmpl's `__text_alert_list`: labels, annotations and source of each alert.
fn text_alert_list<'a>(alerts: impl Iterator<Item = &'a AlertData>) -> String {
    let mut s = String::new();
    for a in alerts {
        s.push_str("Labels:\n");
        for l in &a.labels {
            s.push_str(&format!(" - {} = {}\n", l.name, l.value));
        }
        s.push_str("Annotations:\n");
        for (k, v) in &a.annotations {
            s.push_str(&format!(" - {k} = {v}\n"));
        }
        s.push_str(&format!("Source: {}\n", a.generator_url));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Data {
        let alert = |fire: bool, inst: &str| AlertData {
            firing: fire,
            labels: Labels::from_pairs([
                ("alertname", "Down"),
                ("instance", inst),
                ("severity", "page"),
            ]),
            annotations: BTreeMap::new(),
            generator_url: "http://g".into(),
        };
        Data {
            receiver: "ops team".into(),
            status: "firing",
            alerts: vec![alert(true, "a"), alert(false, "b")],
            group_labels: Labels::from_pairs([("alertname", "Down")]),
            common_labels: Labels::from_pairs([("alertname", "Down"), ("severity", "page")]),
            common_annotations: BTreeMap::from([("summary".into(), "it is down".into())]),
            external_url: "http://am:9093".into(),
        }
    }

    #[test]
    fn renders_fields_counts_and_default_templates() {
        let t = Template::parse(
            "{{ .Status | toUpper }} {{.CommonLabels.severity}}: {{ .CommonAnnotations.summary }} ({{ .Alerts.Firing | len }}/{{ len .Alerts }}) for {{ .Receiver }}",
        )
        .unwrap();
        assert_eq!(
            t.render(&data()),
            "FIRING page: it is down (1/2) for ops team"
        );
        let t = Template::parse(r#"{{ template "slack.default.title" . }}"#).unwrap();
        assert_eq!(t.render(&data()), "[FIRING:1] Down (page)");
        let t = Template::parse(r#"  {{- template "__alertmanagerURL" . -}}  x"#).unwrap();
        assert_eq!(
            t.render(&data()),
            "http://am:9093/#/alerts?receiver=ops+teamx"
        );
    }

    #[test]
    fn unsupported_actions_are_rejected_at_parse_time() {
        for bad in [
            "{{ range .Alerts }}x{{ end }}",
            "{{ .Foo }}",
            r#"{{ template "mine" . }}"#,
            "{{ .Status",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
