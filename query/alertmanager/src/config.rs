//! Alertmanager's configuration file (`alertmanager.yml`): `global`, the routing tree
//! (`route`), `inhibit_rules`, `receivers` with webhook, Slack, PagerDuty (Events v2) and email
//! integrations, and `templates`. Owns parsing, inheritance of route options and validation
//! (unknown keys, undefined receivers, bad matchers and templates are errors at load time);
//! knows nothing about dispatching or sending.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use storage::{Labels, MatchOp, Matcher};

use super::matchers;
use super::smtp::{self, Auth, Password, SmtpConfig, TlsOptions};
use super::template::Template;
use crate::Error;

/// The built-in default: one route to a receiver with no integrations, so alerts are accepted,
/// grouped and shown in the API but sent nowhere until a real config is given.
pub(crate) const DEFAULT_CONFIG: &str =
    "route:\n  receiver: default\nreceivers:\n  - name: default\n";

/// A duration in Alertmanager's notation (`30s`, `5m`, `4h`, `1d`).
#[derive(Clone, Copy, Debug, PartialEq)]
struct AmDuration(Duration);

impl<'de> Deserialize<'de> for AmDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        gocompat::units::parse_prometheus_duration(&s)
            .map(AmDuration)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    global: RawGlobal,
    route: Option<RawRoute>,
    #[serde(default)]
    inhibit_rules: Vec<RawInhibitRule>,
    #[serde(default)]
    receivers: Vec<RawReceiver>,
    #[serde(default)]
    templates: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    resolve_timeout: Option<AmDuration>,
    slack_api_url: Option<String>,
    pagerduty_url: Option<String>,
    smtp_from: Option<String>,
    smtp_smarthost: Option<String>,
    smtp_hello: Option<String>,
    smtp_auth_username: Option<String>,
    smtp_auth_password: Option<String>,
    smtp_auth_password_file: Option<String>,
    smtp_auth_secret: Option<String>,
    smtp_auth_secret_file: Option<String>,
    smtp_auth_identity: Option<String>,
    smtp_require_tls: Option<bool>,
    smtp_tls_config: Option<RawTls>,
    smtp_force_implicit_tls: Option<bool>,
}

/// Prometheus's `tls_config`, the parts an SMTP client uses.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_file: Option<String>,
    server_name: Option<String>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    receiver: Option<String>,
    group_by: Option<Vec<String>>,
    #[serde(rename = "continue", default)]
    continue_: bool,
    #[serde(default)]
    matchers: Vec<String>,
    #[serde(rename = "match", default)]
    match_eq: BTreeMap<String, String>,
    #[serde(default)]
    match_re: BTreeMap<String, String>,
    group_wait: Option<AmDuration>,
    group_interval: Option<AmDuration>,
    repeat_interval: Option<AmDuration>,
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInhibitRule {
    #[serde(default)]
    source_matchers: Vec<String>,
    #[serde(default)]
    target_matchers: Vec<String>,
    #[serde(default)]
    source_match: BTreeMap<String, String>,
    #[serde(default)]
    source_match_re: BTreeMap<String, String>,
    #[serde(default)]
    target_match: BTreeMap<String, String>,
    #[serde(default)]
    target_match_re: BTreeMap<String, String>,
    #[serde(default)]
    equal: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReceiver {
    name: String,
    #[serde(default)]
    webhook_configs: Vec<RawWebhook>,
    #[serde(default)]
    slack_configs: Vec<RawSlack>,
    #[serde(default)]
    pagerduty_configs: Vec<RawPagerduty>,
    #[serde(default)]
    email_configs: Vec<RawEmail>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    send_resolved: Option<bool>,
    #[serde(default)]
    max_alerts: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlack {
    api_url: Option<String>,
    send_resolved: Option<bool>,
    channel: Option<String>,
    username: Option<String>,
    color: Option<String>,
    title: Option<String>,
    title_link: Option<String>,
    pretext: Option<String>,
    text: Option<String>,
    footer: Option<String>,
    fallback: Option<String>,
    icon_emoji: Option<String>,
    icon_url: Option<String>,
    #[serde(default)]
    link_names: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPagerduty {
    routing_key: Option<String>,
    service_key: Option<String>,
    url: Option<String>,
    send_resolved: Option<bool>,
    client: Option<String>,
    client_url: Option<String>,
    description: Option<String>,
    severity: Option<String>,
    class: Option<String>,
    component: Option<String>,
    group: Option<String>,
    source: Option<String>,
    #[serde(default)]
    details: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    to: String,
    from: Option<String>,
    smarthost: Option<String>,
    hello: Option<String>,
    auth_username: Option<String>,
    auth_password: Option<String>,
    auth_password_file: Option<String>,
    auth_secret: Option<String>,
    auth_secret_file: Option<String>,
    auth_identity: Option<String>,
    require_tls: Option<bool>,
    tls_config: Option<RawTls>,
    force_implicit_tls: Option<bool>,
    send_resolved: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    text: Option<String>,
    html: Option<String>,
}

/// A loaded, validated configuration.
#[derive(Debug)]
pub(crate) struct AmConfig {
    pub original: String,
    pub resolve_timeout: Duration,
    pub route: Route,
    pub inhibit_rules: Vec<InhibitRule>,
    pub receivers: Vec<Receiver>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum GroupBy {
    /// `group_by: ['...']`: every label, so each alert is its own group.
    All,
    Labels(Vec<String>),
}

#[derive(Debug)]
pub(crate) struct Route {
    /// Alertmanager's route key: the parent's key, `/`, and this route's matchers.
    pub key: String,
    /// Position in the tree (root is empty), unique even where keys repeat.
    pub id: Vec<usize>,
    pub matchers: Vec<Matcher>,
    pub receiver: String,
    pub group_by: GroupBy,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    pub continue_: bool,
    pub routes: Vec<Route>,
}

#[derive(Debug)]
pub(crate) struct InhibitRule {
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    pub equal: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct Receiver {
    pub name: String,
    pub integrations: Vec<Integration>,
}

#[derive(Debug)]
pub(crate) struct Integration {
    pub send_resolved: bool,
    pub kind: IntegrationKind,
}

#[derive(Debug)]
pub(crate) enum IntegrationKind {
    Webhook { url: String, max_alerts: usize },
    Slack(Box<Slack>),
    Pagerduty(Box<Pagerduty>),
    Email(Box<Email>),
}

impl IntegrationKind {
    /// The `integration` label of the notification metrics, as Alertmanager names them.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            IntegrationKind::Webhook { .. } => "webhook",
            IntegrationKind::Slack(_) => "slack",
            IntegrationKind::Pagerduty(_) => "pagerduty",
            IntegrationKind::Email(_) => "email",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Slack {
    pub api_url: String,
    pub channel: Option<Template>,
    pub username: Template,
    pub color: Template,
    pub title: Template,
    pub title_link: Template,
    pub pretext: Template,
    pub text: Template,
    pub footer: Template,
    pub fallback: Template,
    pub icon_emoji: Template,
    pub icon_url: Template,
    pub link_names: bool,
}

#[derive(Debug)]
pub(crate) struct Pagerduty {
    pub url: String,
    pub routing_key: String,
    pub client: Template,
    pub client_url: Template,
    pub description: Template,
    pub severity: Template,
    pub source: Template,
    pub class: Option<Template>,
    pub component: Option<Template>,
    pub group: Option<Template>,
    pub details: Vec<(String, Template)>,
}

#[derive(Debug)]
pub(crate) struct Email {
    pub to: String,
    pub from: String,
    pub smtp: SmtpConfig,
    pub headers: Vec<(String, Template)>,
    /// The `text/plain` alternative, when configured (or by default, see `receiver`).
    pub text: Option<Template>,
    /// The `text/html` alternative, when configured.
    pub html: Option<Template>,
}

fn err(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}

impl AmConfig {
    pub(crate) fn parse(text: &str) -> Result<AmConfig, Error> {
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text))
                .map_err(|e| err(format!("{}: {}", e.path(), e.inner())))?
        };
        if !raw.templates.is_empty() {
            tracing::warn!(
                files = ?raw.templates,
                "Alertmanager template files are not read: notifications use the default templates and field references only"
            );
        }
        let mut names = HashSet::new();
        let mut receivers = Vec::new();
        for r in raw.receivers {
            if !names.insert(r.name.clone()) {
                return Err(err(format!(
                    "notification config name {:?} is not unique",
                    r.name
                )));
            }
            receivers.push(receiver(r, &raw.global)?);
        }
        let root = raw
            .route
            .ok_or_else(|| err("no route provided in config"))?;
        if !root.matchers.is_empty() || !root.match_eq.is_empty() || !root.match_re.is_empty() {
            return Err(err("root route must not have any matchers"));
        }
        if root.continue_ {
            return Err(err("cannot have continue in root route"));
        }
        let root_receiver = root
            .receiver
            .clone()
            .ok_or_else(|| err("root route must specify a default receiver"))?;
        let defaults = Route {
            key: String::new(),
            id: Vec::new(),
            matchers: Vec::new(),
            receiver: root_receiver,
            group_by: GroupBy::Labels(Vec::new()),
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(5 * 60),
            repeat_interval: Duration::from_secs(4 * 3600),
            continue_: false,
            routes: Vec::new(),
        };
        let route = build_route(root, None, &defaults, Vec::new())?;
        check_receivers(&route, &names)?;
        let inhibit_rules = raw
            .inhibit_rules
            .into_iter()
            .map(inhibit_rule)
            .collect::<Result<_, _>>()?;
        Ok(AmConfig {
            original: masked(text),
            resolve_timeout: raw
                .global
                .resolve_timeout
                .map_or(Duration::from_secs(300), |d| d.0),
            route,
            inhibit_rules,
            receivers,
        })
    }

    pub(crate) fn receiver(&self, name: &str) -> Option<&Receiver> {
        self.receivers.iter().find(|r| r.name == name)
    }
}

/// The config as `/api/v2/status` shows it: secrets replaced by `<secret>` ([`mask_secrets`]).
fn masked(text: &str) -> String {
    match serde_yaml::from_str::<serde_yaml::Value>(text) {
        Ok(mut v) => {
            mask_secrets(&mut v);
            serde_yaml::to_string(&v).unwrap_or_default()
        }
        Err(_) => String::new(),
    }
}

/// Replaces, in an alertmanager.yml document, the values Alertmanager types as `Secret` or
/// `SecretURL` by `<secret>`, as its config marshalling does: the global Slack URL and SMTP
/// credentials, webhook URLs, Slack API URLs, PagerDuty keys and email credentials. Other
/// URLs (PagerDuty's `url`, `pagerduty_url`) stay readable, as in Alertmanager. Empty values
/// are left as they are: there is nothing to hide.
pub fn mask_secrets(doc: &mut serde_yaml::Value) {
    const GLOBAL: &[&str] = &["slack_api_url", "smtp_auth_password", "smtp_auth_secret"];
    const RECEIVER: &[(&str, &[&str])] = &[
        ("webhook_configs", &["url"]),
        ("slack_configs", &["api_url"]),
        ("pagerduty_configs", &["routing_key", "service_key"]),
        ("email_configs", &["auth_password", "auth_secret"]),
    ];
    fn mask(m: &mut serde_yaml::Value, keys: &[&str]) {
        for k in keys {
            if let Some(v) = m.get_mut(*k) {
                if v.as_str().is_some_and(|s| !s.is_empty()) {
                    *v = serde_yaml::Value::String("<secret>".into());
                }
            }
        }
    }
    if let Some(g) = doc.get_mut("global") {
        mask(g, GLOBAL);
    }
    let Some(receivers) = doc.get_mut("receivers").and_then(|r| r.as_sequence_mut()) else {
        return;
    };
    for r in receivers {
        for (list, keys) in RECEIVER {
            if let Some(items) = r.get_mut(*list).and_then(|l| l.as_sequence_mut()) {
                items.iter_mut().for_each(|i| mask(i, keys));
            }
        }
    }
}

fn check_receivers(r: &Route, names: &HashSet<String>) -> Result<(), Error> {
    if !names.contains(&r.receiver) {
        return Err(err(format!(
            "undefined receiver {:?} used in route",
            r.receiver
        )));
    }
    r.routes.iter().try_for_each(|c| check_receivers(c, names))
}

/// Matchers from `matchers`, `match` and `match_re`, sorted by name as Alertmanager sorts them.
fn collect_matchers(
    lines: &[String],
    eq: &BTreeMap<String, String>,
    re: &BTreeMap<String, String>,
) -> Result<Vec<Matcher>, Error> {
    let mut out = Vec::new();
    for (k, v) in eq {
        out.push(Matcher::new(MatchOp::Equal, k, v).map_err(|e| err(e.to_string()))?);
    }
    for (k, v) in re {
        out.push(
            Matcher::new(MatchOp::RegexMatch, k, v)
                .map_err(|e| err(format!("invalid regex for {k}: {e}")))?,
        );
    }
    for line in lines {
        out.extend(matchers::parse(line).map_err(|e| err(e.to_string()))?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.value.cmp(&b.value)));
    Ok(out)
}

fn build_route(
    raw: RawRoute,
    parent_key: Option<&str>,
    parent: &Route,
    id: Vec<usize>,
) -> Result<Route, Error> {
    let matchers = collect_matchers(&raw.matchers, &raw.match_eq, &raw.match_re)?;
    let key = match parent_key {
        None => matchers::list_to_string(&matchers),
        Some(p) => format!("{p}/{}", matchers::list_to_string(&matchers)),
    };
    let group_by = match raw.group_by {
        None => parent.group_by.clone(),
        Some(g) if g.iter().any(|l| l == "...") => {
            if g.len() > 1 {
                return Err(err(
                    "cannot have wildcard group_by (`...`) and other labels at the same time",
                ));
            }
            GroupBy::All
        }
        Some(g) => {
            let mut seen = HashSet::new();
            for l in &g {
                if !seen.insert(l) {
                    return Err(err(format!("duplicated label {l:?} in group_by")));
                }
            }
            GroupBy::Labels(g)
        }
    };
    let positive = |d: Option<AmDuration>, inherited: Duration, what: &str| match d {
        Some(AmDuration(d)) if d.is_zero() && what != "group_wait" => {
            Err(err(format!("{what} cannot be zero")))
        }
        Some(AmDuration(d)) => Ok(d),
        None => Ok(inherited),
    };
    let mut route = Route {
        key,
        id: id.clone(),
        matchers,
        receiver: raw.receiver.unwrap_or_else(|| parent.receiver.clone()),
        group_by,
        group_wait: positive(raw.group_wait, parent.group_wait, "group_wait")?,
        group_interval: positive(raw.group_interval, parent.group_interval, "group_interval")?,
        repeat_interval: positive(
            raw.repeat_interval,
            parent.repeat_interval,
            "repeat_interval",
        )?,
        continue_: raw.continue_,
        routes: Vec::new(),
    };
    for (i, child) in raw.routes.into_iter().enumerate() {
        let mut cid = id.clone();
        cid.push(i);
        let c = build_route(child, Some(&route.key), &route, cid)?;
        route.routes.push(c);
    }
    Ok(route)
}

impl Route {
    /// The routes an alert is delivered by: the deepest matching routes, siblings tried in
    /// order, stopping at the first match unless it has `continue`; the route itself when no
    /// child matches. Empty when this route does not match.
    /// The route at position `id` (as [`Route::id`]), if the tree has one there.
    pub(crate) fn at(&self, id: &[usize]) -> Option<&Route> {
        match id.split_first() {
            None => Some(self),
            Some((i, rest)) => self.routes.get(*i)?.at(rest),
        }
    }

    pub(crate) fn matching(&self, labels: &Labels) -> Vec<&Route> {
        if !matchers::all_match(&self.matchers, labels) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for child in &self.routes {
            let m = child.matching(labels);
            let matched = !m.is_empty();
            out.extend(m);
            if matched && !child.continue_ {
                break;
            }
        }
        if out.is_empty() {
            out.push(self);
        }
        out
    }

    /// The labels an alert is grouped by on this route.
    pub(crate) fn group_labels(&self, labels: &Labels) -> Labels {
        match &self.group_by {
            GroupBy::All => labels.clone(),
            GroupBy::Labels(names) => Labels::from_pairs(
                names
                    .iter()
                    .filter_map(|n| labels.get(n).map(|v| (n.clone(), v.to_owned()))),
            ),
        }
    }
}

fn inhibit_rule(r: RawInhibitRule) -> Result<InhibitRule, Error> {
    Ok(InhibitRule {
        source: collect_matchers(&r.source_matchers, &r.source_match, &r.source_match_re)?,
        target: collect_matchers(&r.target_matchers, &r.target_match, &r.target_match_re)?,
        equal: r.equal,
    })
}

fn tmpl(s: Option<String>, default: &str) -> Result<Template, Error> {
    match s {
        Some(s) => Template::parse(&s).map_err(err),
        None => Ok(Template::default_named(default)),
    }
}

fn opt_tmpl(s: Option<String>) -> Result<Option<Template>, Error> {
    s.map(|s| Template::parse(&s).map_err(err)).transpose()
}

fn check_url(what: &str, url: &str) -> Result<(), Error> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(err(format!(
            "{what}: unsupported URL {url:?} (want http:// or https://)"
        )))
    }
}

fn receiver(r: RawReceiver, g: &RawGlobal) -> Result<Receiver, Error> {
    let mut integrations = Vec::new();
    for w in r.webhook_configs {
        check_url("webhook_configs.url", &w.url)?;
        integrations.push(Integration {
            send_resolved: w.send_resolved.unwrap_or(true),
            kind: IntegrationKind::Webhook {
                url: w.url,
                max_alerts: w.max_alerts,
            },
        });
    }
    for s in r.slack_configs {
        let api_url = s
            .api_url
            .or_else(|| g.slack_api_url.clone())
            .ok_or_else(|| err("no global Slack API URL set either inline or in a file"))?;
        check_url("slack_configs.api_url", &api_url)?;
        integrations.push(Integration {
            send_resolved: s.send_resolved.unwrap_or(false),
            kind: IntegrationKind::Slack(Box::new(Slack {
                api_url,
                channel: opt_tmpl(s.channel)?,
                username: tmpl(s.username, "slack.default.username")?,
                color: match s.color {
                    Some(c) => Template::parse(&c).map_err(err)?,
                    None => Template::slack_color(),
                },
                title: tmpl(s.title, "slack.default.title")?,
                title_link: tmpl(s.title_link, "slack.default.titlelink")?,
                pretext: tmpl(s.pretext, "slack.default.pretext")?,
                text: tmpl(s.text, "slack.default.text")?,
                footer: tmpl(s.footer, "slack.default.footer")?,
                fallback: tmpl(s.fallback, "slack.default.fallback")?,
                icon_emoji: tmpl(s.icon_emoji, "slack.default.iconemoji")?,
                icon_url: tmpl(s.icon_url, "slack.default.iconurl")?,
                link_names: s.link_names,
            })),
        });
    }
    for p in r.pagerduty_configs {
        if p.service_key.is_some() {
            return Err(err(
                "pagerduty_configs: service_key (Events API v1) is not supported; use routing_key (Events API v2)",
            ));
        }
        let routing_key = p
            .routing_key
            .ok_or_else(|| err("missing service or routing key in PagerDuty config"))?;
        let url = p
            .url
            .or_else(|| g.pagerduty_url.clone())
            .unwrap_or_else(|| "https://events.pagerduty.com/v2/enqueue".to_owned());
        check_url("pagerduty_configs.url", &url)?;
        let mut details = Vec::new();
        let default_details = [
            (
                "firing",
                "{{ template \"pagerduty.default.instances\" .Alerts.Firing }}",
            ),
            ("num_firing", "{{ .Alerts.Firing | len }}"),
            ("num_resolved", "{{ .Alerts.Resolved | len }}"),
            (
                "resolved",
                "{{ template \"pagerduty.default.instances\" .Alerts.Resolved }}",
            ),
        ];
        if p.details.is_empty() {
            for (k, v) in default_details {
                details.push((k.to_owned(), detail_template(v)?));
            }
        } else {
            for (k, v) in p.details {
                let t = detail_template(&v)?;
                details.push((k, t));
            }
        }
        integrations.push(Integration {
            send_resolved: p.send_resolved.unwrap_or(true),
            kind: IntegrationKind::Pagerduty(Box::new(Pagerduty {
                url,
                routing_key,
                client: tmpl(p.client, "pagerduty.default.client")?,
                client_url: tmpl(p.client_url, "pagerduty.default.clientURL")?,
                description: tmpl(p.description, "pagerduty.default.description")?,
                severity: match p.severity {
                    Some(s) => Template::parse(&s).map_err(err)?,
                    None => Template::parse("error").map_err(err)?,
                },
                source: tmpl(p.source, "pagerduty.default.client")?,
                class: opt_tmpl(p.class)?,
                component: opt_tmpl(p.component)?,
                group: opt_tmpl(p.group)?,
                details,
            })),
        });
    }
    for e in r.email_configs {
        let from = e
            .from
            .clone()
            .or_else(|| g.smtp_from.clone())
            .ok_or_else(|| err("no global SMTP from set"))?;
        let smarthost = e
            .smarthost
            .clone()
            .or_else(|| g.smtp_smarthost.clone())
            .ok_or_else(|| err("no global SMTP smarthost set"))?;
        let smtp = smtp_config(&e, g, smarthost)?;
        let mut headers = Vec::new();
        let has = |h: &str| e.headers.keys().any(|k| k.eq_ignore_ascii_case(h));
        let mut defaults = Vec::new();
        if !has("Subject") {
            defaults.push((
                "Subject".to_owned(),
                Template::default_named("email.default.subject"),
            ));
        }
        if !has("To") {
            defaults.push(("To".to_owned(), Template::parse(&e.to).map_err(err)?));
        }
        if !has("From") {
            defaults.push(("From".to_owned(), Template::parse(&from).map_err(err)?));
        }
        for (k, v) in e.headers {
            headers.push((k, Template::parse(&v).map_err(err)?));
        }
        headers.extend(defaults);
        // Alertmanager sends one part per non-empty template. Its default is an HTML part from
        // `email.default.html`, which novamon does not ship: with neither set, the plain alert
        // list goes as the text part instead.
        let part = |t: Option<String>| -> Result<Option<Template>, Error> {
            t.filter(|t| !t.is_empty())
                .map(|t| Template::parse(&t).map_err(err))
                .transpose()
        };
        let html = part(e.html)?;
        let text = match (part(e.text)?, &html) {
            (None, None) => Some(Template::default_named("__text_alert_list")),
            (text, _) => text,
        };
        integrations.push(Integration {
            send_resolved: e.send_resolved.unwrap_or(false),
            kind: IntegrationKind::Email(Box::new(Email {
                to: e.to,
                from,
                smtp,
                headers,
                text,
                html,
            })),
        });
    }
    Ok(Receiver {
        name: r.name,
        integrations,
    })
}

/// An email integration's SMTP settings, each falling back to its `smtp_*` global as in
/// Alertmanager (the password and its file, and the secret and its file, as pairs).
fn smtp_config(e: &RawEmail, g: &RawGlobal, smarthost: String) -> Result<SmtpConfig, Error> {
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    for (password, file, what) in [
        (
            &g.smtp_auth_password,
            &g.smtp_auth_password_file,
            "smtp_auth_password",
        ),
        (
            &g.smtp_auth_secret,
            &g.smtp_auth_secret_file,
            "smtp_auth_secret",
        ),
        (&e.auth_password, &e.auth_password_file, "auth_password"),
        (&e.auth_secret, &e.auth_secret_file, "auth_secret"),
    ] {
        if set(password) && set(file) {
            return Err(err(format!(
                "at most one of {what} & {what}_file must be configured"
            )));
        }
    }
    // CRAM-MD5 is the only mechanism a secret is for, and lettre does not speak it.
    if [
        &e.auth_secret,
        &e.auth_secret_file,
        &g.smtp_auth_secret,
        &g.smtp_auth_secret_file,
    ]
    .into_iter()
    .any(set)
    {
        return Err(err("email_configs: auth_secret (CRAM-MD5 authentication) is not supported; use auth_password (PLAIN or LOGIN)"));
    }
    let (host, port) = smtp::split_smarthost(&smarthost)
        .map_err(|m| err(format!("email_configs.smarthost: {m}")))?;
    let username = e
        .auth_username
        .clone()
        .filter(|u| !u.is_empty())
        .or_else(|| g.smtp_auth_username.clone())
        .filter(|u| !u.is_empty());
    let password = if set(&e.auth_password) || set(&e.auth_password_file) {
        (&e.auth_password, &e.auth_password_file)
    } else {
        (&g.smtp_auth_password, &g.smtp_auth_password_file)
    };
    let password = match password {
        (_, Some(f)) if !f.is_empty() => Password::File(f.into()),
        (p, _) => Password::Inline(p.clone().unwrap_or_default()),
    };
    let tls = e
        .tls_config
        .clone()
        .or_else(|| g.smtp_tls_config.clone())
        .unwrap_or_default();
    Ok(SmtpConfig {
        smarthost,
        host,
        port,
        hello: e
            .hello
            .clone()
            .or_else(|| g.smtp_hello.clone())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned()),
        require_tls: e.require_tls.or(g.smtp_require_tls).unwrap_or(true),
        implicit_tls: smtp::implicit_tls(e.force_implicit_tls.or(g.smtp_force_implicit_tls), port),
        auth: username.map(|username| Auth {
            username,
            identity: e
                .auth_identity
                .clone()
                .or_else(|| g.smtp_auth_identity.clone())
                .unwrap_or_default(),
            password,
        }),
        tls: TlsOptions {
            ca_file: tls.ca_file.filter(|f| !f.is_empty()).map(Into::into),
            server_name: tls.server_name.filter(|s| !s.is_empty()),
            insecure_skip_verify: tls.insecure_skip_verify,
        },
    })
}

/// PagerDuty's default details pass `.Alerts.Firing` / `.Alerts.Resolved` to the instances
/// template; those two are understood here, anything else goes through the normal parser.
fn detail_template(v: &str) -> Result<Template, Error> {
    match v {
        "{{ template \"pagerduty.default.instances\" .Alerts.Firing }}" => {
            Ok(Template::firing_list())
        }
        "{{ template \"pagerduty.default.instances\" .Alerts.Resolved }}" => {
            Ok(Template::resolved_list())
        }
        _ => Template::parse(v).map_err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = r##"
global:
  resolve_timeout: 1m
route:
  receiver: default
  group_by: [alertname]
  group_wait: 10s
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      continue: true
      group_by: ['...']
    - match: {severity: critical}
      receiver: slack
      repeat_interval: 1h
    - match_re: {team: "db|web"}
      receiver: team
      routes:
        - matchers: ['env="prod"']
          receiver: pager
receivers:
  - name: default
  - name: pager
    pagerduty_configs: [{routing_key: k, url: "http://127.0.0.1:1/v2/enqueue"}]
  - name: slack
    slack_configs: [{api_url: "http://127.0.0.1:1/slack", channel: "#ops", title: "{{ .CommonLabels.alertname }} is {{ .Status }}"}]
  - name: team
    webhook_configs: [{url: "http://127.0.0.1:1/hook"}]
inhibit_rules:
  - source_matchers: [severity=critical]
    target_matchers: [severity=warning]
    equal: [alertname]
"##;

    fn receivers(c: &AmConfig, l: &[(&str, &str)]) -> Vec<String> {
        c.route
            .matching(&Labels::from_pairs(l.iter().copied()))
            .iter()
            .map(|r| r.receiver.clone())
            .collect()
    }

    #[test]
    fn routing_tree_honours_order_continue_and_nesting() {
        let c = AmConfig::parse(CFG).unwrap();
        assert_eq!(c.resolve_timeout, Duration::from_secs(60));
        assert_eq!(
            receivers(&c, &[("severity", "critical")]),
            ["pager", "slack"]
        );
        assert_eq!(receivers(&c, &[("team", "db")]), ["team"]);
        assert_eq!(receivers(&c, &[("team", "db"), ("env", "prod")]), ["pager"]);
        assert_eq!(receivers(&c, &[("team", "dba")]), ["default"]);
        // A critical db alert stops at the `slack` route (no continue) before the team route.
        assert_eq!(
            receivers(&c, &[("severity", "critical"), ("team", "db")]),
            ["pager", "slack"]
        );
    }

    #[test]
    fn options_are_inherited_and_keys_follow_alertmanager() {
        let c = AmConfig::parse(CFG).unwrap();
        let l = Labels::from_pairs([("severity", "critical"), ("alertname", "A"), ("x", "1")]);
        let m = c.route.matching(&l);
        assert_eq!(m[0].key, r#"{}/{severity="critical"}"#);
        assert_eq!(m[0].group_by, GroupBy::All);
        assert_eq!(m[0].group_labels(&l), l);
        assert_eq!(m[1].group_wait, Duration::from_secs(10));
        assert_eq!(m[1].repeat_interval, Duration::from_secs(3600));
        assert_eq!(m[1].group_interval, Duration::from_secs(300));
        assert_eq!(
            m[1].group_labels(&l),
            Labels::from_pairs([("alertname", "A")])
        );
        let nested = c
            .route
            .matching(&Labels::from_pairs([("team", "db"), ("env", "prod")]));
        assert_eq!(nested[0].key, r#"{}/{team=~"db|web"}/{env="prod"}"#);
        assert_eq!(c.inhibit_rules[0].equal, ["alertname"]);
    }

    #[test]
    fn invalid_configs_are_clear_errors() {
        let cases = [
            ("receivers: [{name: a}]", "no route"),
            ("route: {receiver: x}\nreceivers: [{name: a}]", "undefined receiver \"x\""),
            ("route: {receiver: a, matchers: [a=b]}\nreceivers: [{name: a}]", "root route"),
            ("route: {receiver: a}\nreceivers: [{name: a}, {name: a}]", "not unique"),
            ("route: {receiver: a, group_wait: soon}\nreceivers: [{name: a}]", "group_wait"),
            ("route: {receiver: a, routes: [{matchers: ['a=~(']}]}\nreceivers: [{name: a}]", "bad matcher"),
            ("route: {receiver: a}\nreceivers: [{name: a, opsgenie_configs: [{}]}]", "opsgenie_configs"),
            ("route: {receiver: a}\nreceivers: [{name: a, slack_configs: [{channel: x}]}]", "Slack API URL"),
            ("route: {receiver: a}\nreceivers: [{name: a, webhook_configs: [{url: 'ftp://x'}]}]", "unsupported URL"),
            ("route: {receiver: a, group_by: ['...', x]}\nreceivers: [{name: a}]", "wildcard"),
            ("route: {receiver: a}\nreceivers: [{name: a, slack_configs: [{api_url: 'http://x', title: '{{ range . }}'}]}]", "unsupported action"),
        ];
        for (yml, want) in cases {
            let e = AmConfig::parse(yml).unwrap_err().to_string();
            assert!(e.contains(want), "{yml}: {e}");
        }
        AmConfig::parse(DEFAULT_CONFIG).unwrap();
    }

    fn email(c: &AmConfig) -> &Email {
        match &c.receivers[0].integrations[0].kind {
            IntegrationKind::Email(e) => e,
            _ => panic!("not email"),
        }
    }

    #[test]
    fn email_smtp_settings_fall_back_to_global_as_in_alertmanager() {
        let c = AmConfig::parse(
            "global: {smtp_from: a@x, smtp_smarthost: 'mail:465', smtp_auth_username: u, smtp_auth_password: gpw, smtp_auth_identity: id, smtp_tls_config: {server_name: relay, insecure_skip_verify: true}}\nroute: {receiver: a}\nreceivers: [{name: a, email_configs: [{to: b@x}]}]",
        )
        .unwrap();
        let s = &email(&c).smtp;
        assert_eq!(
            (s.host.as_str(), s.port, s.hello.as_str()),
            ("mail", 465, "localhost")
        );
        assert!(s.require_tls, "smtp_require_tls defaults to true");
        assert!(s.implicit_tls, "port 465");
        let a = s.auth.as_ref().unwrap();
        assert_eq!((a.username.as_str(), a.identity.as_str()), ("u", "id"));
        assert!(matches!(&a.password, Password::Inline(p) if p == "gpw"));
        assert_eq!(s.tls.server_name.as_deref(), Some("relay"));
        assert!(s.tls.insecure_skip_verify);
        assert!(
            !format!("{c:?}").contains("gpw"),
            "the password stays out of Debug"
        );

        // The receiver's own settings win; a password file replaces the global password.
        let c = AmConfig::parse(
            "global: {smtp_from: a@x, smtp_smarthost: 'mail:465', smtp_require_tls: false, smtp_auth_username: u, smtp_auth_password: gpw}\nroute: {receiver: a}\nreceivers: [{name: a, email_configs: [{to: b@x, smarthost: 'relay:587', hello: me, require_tls: true, auth_username: v, auth_password_file: /pw, tls_config: {ca_file: /ca.pem}}]}]",
        )
        .unwrap();
        let s = &email(&c).smtp;
        assert_eq!(
            (s.host.as_str(), s.port, s.hello.as_str()),
            ("relay", 587, "me")
        );
        assert!(s.require_tls && !s.implicit_tls);
        let a = s.auth.as_ref().unwrap();
        assert_eq!(a.username, "v");
        assert!(matches!(&a.password, Password::File(p) if p.to_str() == Some("/pw")));
        assert_eq!(
            s.tls.ca_file.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );

        let c = AmConfig::parse(
            "global: {smtp_force_implicit_tls: false}\nroute: {receiver: a}\nreceivers: [{name: a, email_configs: [{to: b@x, from: a@x, smarthost: 'mail:465', require_tls: false}]}]",
        )
        .unwrap();
        let s = &email(&c).smtp;
        assert!(!s.implicit_tls && !s.require_tls && s.auth.is_none());
    }

    #[test]
    fn invalid_email_configs_are_refused() {
        let email = |g: &str, e: &str| {
            let host = if e.contains("smarthost") {
                ""
            } else {
                "smarthost: 'mail:25', "
            };
            format!("global: {{smtp_from: a@x, {g}}}\nroute: {{receiver: a}}\nreceivers: [{{name: a, email_configs: [{{to: b@x, {host}{e}}}]}}]")
        };
        let cases = [
            (
                email("smtp_auth_password: p, smtp_auth_password_file: /f", ""),
                "at most one of smtp_auth_password & smtp_auth_password_file",
            ),
            (
                email("", "auth_password: p, auth_password_file: /f"),
                "at most one of auth_password & auth_password_file",
            ),
            (email("", "auth_secret: s"), "CRAM-MD5"),
            (email("smtp_auth_secret_file: /s", ""), "CRAM-MD5"),
            (email("", "tls_config: {cert_file: /c}"), "cert_file"),
            (email("", "smarthost: mail"), "missing port"),
            (email("", "smarthost: 'mail:smtp'"), "invalid port"),
        ];
        for (yml, want) in cases {
            let e = AmConfig::parse(&yml).unwrap_err().to_string();
            assert!(e.contains(want), "{yml}: {e}");
        }
    }

    #[test]
    fn original_config_hides_secrets() {
        let c = AmConfig::parse(CFG).unwrap();
        for secret in ["routing_key: k", "/slack", "/hook"] {
            assert!(!c.original.contains(secret), "{}", c.original);
        }
        for shown in [
            "routing_key: <secret>",
            "api_url: <secret>",
            "url: <secret>",
            "channel: '#ops'",
            // PagerDuty's endpoint is a plain URL in Alertmanager, not a secret.
            "url: http://127.0.0.1:1/v2/enqueue",
        ] {
            assert!(c.original.contains(shown), "{shown}: {}", c.original);
        }
        let mut doc: serde_yaml::Value = serde_yaml::from_str(
            "global: {slack_api_url: 'http://s/x', smtp_auth_password: pw, pagerduty_url: 'http://pd/'}\nreceivers: [{name: a, email_configs: [{to: x, auth_password: epw}], pagerduty_configs: [{service_key: sk}]}]",
        )
        .unwrap();
        mask_secrets(&mut doc);
        let out = serde_yaml::to_string(&doc).unwrap();
        for secret in ["http://s/x", "pw", "epw", "sk"] {
            assert!(!out.contains(&format!(" {secret}\n")), "{secret}: {out}");
        }
        assert!(out.contains("pagerduty_url: http://pd/"), "{out}");
        assert_eq!(out.matches("<secret>").count(), 4, "{out}");
    }
}
