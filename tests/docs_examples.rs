//! The JSON and YAML a user copies from must work: every fenced `json` and `yaml` block of
//! README.md and docs/*.md, and every file of examples/, parses and means what it says.
//!
//! How a block is recognised:
//! - JSON with `campaigns`: a campaigns file, read and validated as the issuer reads
//!   `--campaigns-file` (`firstcome_contract::CampaignsFile`);
//! - YAML of `kind: CouponCampaign`: read as the operator reads it, naming no field the
//!   CRD lacks (every key of the example survives reading it into the types the CRD is
//!   generated from), and deriving a valid campaign configuration;
//! - any other YAML document: a manifest with `apiVersion`, `kind` and `metadata.name`;
//! - a block that is deliberately a piece of a document says so in its fence's info
//!   string (```` ```yaml fragment ````) and is only parsed. Anything else fails, so a
//!   new kind of example is recognised on purpose.

use std::path::Path;

use firstcome_contract::CampaignsFile;
use firstcome_operator::campaign::campaign_config;
use firstcome_operator::resource::CouponCampaign;
use serde::Deserialize;
use serde_json::Value;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Language {
    Json,
    Yaml,
}

/// One example: where it is, its language, whether it is marked a fragment, its text.
struct Example {
    origin: String,
    language: Language,
    fragment: bool,
    text: String,
}

/// What an example turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    CampaignsFile,
    CouponCampaign,
    Manifest,
    Fragment,
}

/// The fenced `json`/`yaml` blocks of a Markdown file.
fn fenced(path: &Path) -> Vec<Example> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut examples = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let body: Vec<&str> = (lines.by_ref())
            .map(|(_, line)| line)
            .take_while(|line| line.trim() != "```")
            .collect();
        let mut words = info.split_whitespace();
        let language = match words.next() {
            Some("json") => Language::Json,
            Some("yaml" | "yml") => Language::Yaml,
            _ => continue,
        };
        examples.push(Example {
            origin: format!("{}:{}", path.display(), n + 1),
            language,
            fragment: words.any(|word| word == "fragment"),
            text: body.join("\n"),
        });
    }
    examples
}

/// Every example: the Markdown blocks and the files of examples/.
fn all_examples() -> Vec<Example> {
    let root = Path::new(ROOT);
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    docs.insert(0, root.join("README.md"));
    let mut examples: Vec<Example> = docs.iter().flat_map(|path| fenced(path)).collect();
    let mut files: Vec<_> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    for path in files {
        let language = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Language::Json,
            Some("yaml" | "yml") => Language::Yaml,
            _ => panic!("{}: an example of what?", path.display()),
        };
        examples.push(Example {
            origin: path.display().to_string(),
            language,
            fragment: false,
            text: std::fs::read_to_string(&path).unwrap(),
        });
    }
    examples
}

/// The documents of an example, as JSON values.
fn documents(example: &Example) -> Result<Vec<Value>, String> {
    match example.language {
        Language::Json => serde_json::from_str(&example.text)
            .map(|value| vec![value])
            .map_err(|e| format!("not JSON: {e}")),
        Language::Yaml => serde_yaml_ng::Deserializer::from_str(&example.text)
            .map(|document| Value::deserialize(document).map_err(|e| format!("not YAML: {e}")))
            .collect(),
    }
}

/// What `example` is, or why it does not work.
fn check(example: &Example) -> Result<Vec<Kind>, String> {
    let documents = documents(example)?;
    if example.fragment {
        return Ok(vec![Kind::Fragment]);
    }
    documents
        .iter()
        .map(|document| match example.language {
            Language::Json => campaigns_file(document),
            Language::Yaml => manifest(document),
        })
        .collect()
}

fn campaigns_file(document: &Value) -> Result<Kind, String> {
    if document.get("campaigns").is_none() {
        return Err("JSON that is not a campaigns file: mark it ```json fragment".into());
    }
    let file: CampaignsFile = serde_json::from_value(document.clone())
        .map_err(|e| format!("not a campaigns file: {e}"))?;
    file.validate()
        .map_err(|e| format!("an invalid campaigns file: {e}"))?;
    Ok(Kind::CampaignsFile)
}

fn manifest(document: &Value) -> Result<Kind, String> {
    let field = |name: &str| document.get(name).and_then(Value::as_str);
    let (Some(_), Some(kind)) = (field("apiVersion"), field("kind")) else {
        return Err("YAML without apiVersion and kind: mark it ```yaml fragment".into());
    };
    if document["metadata"]["name"].as_str().is_none() {
        return Err(format!("a {kind} without metadata.name"));
    }
    if kind != "CouponCampaign" {
        return Ok(Kind::Manifest);
    }
    let mut campaign: CouponCampaign = serde_json::from_value(document.clone())
        .map_err(|e| format!("not a CouponCampaign: {e}"))?;
    // Applied without a namespace, as `kubectl apply -f` does: into `default`.
    (campaign.metadata.namespace).get_or_insert_with(|| "default".into());
    let read = serde_json::to_value(&campaign).unwrap();
    let unknown = unknown_fields(document, &read, "");
    if !unknown.is_empty() {
        return Err(format!("fields the CRD does not have: {unknown:?}"));
    }
    campaign_config(&campaign).map_err(|e| format!("an invalid campaign: {e}"))?;
    Ok(Kind::CouponCampaign)
}

/// The keys of `written` that reading it into the types dropped.
fn unknown_fields(written: &Value, read: &Value, path: &str) -> Vec<String> {
    match (written, read) {
        (Value::Object(fields), Value::Object(kept)) => (fields.iter())
            .flat_map(|(key, value)| {
                let at = format!("{path}.{key}");
                match kept.get(key) {
                    Some(read) => unknown_fields(value, read, &at),
                    None => vec![at],
                }
            })
            .collect(),
        (Value::Array(items), Value::Array(kept)) => (items.iter().zip(kept))
            .enumerate()
            .flat_map(|(i, (item, read))| unknown_fields(item, read, &format!("{path}[{i}]")))
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn every_json_and_yaml_example_parses_and_validates() {
    let examples = all_examples();
    let mut seen = Vec::new();
    let mut failures = Vec::new();
    for example in &examples {
        match check(example) {
            Ok(kinds) => seen.extend(kinds),
            Err(why) => failures.push(format!("{}: {why}", example.origin)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for kind in [Kind::CampaignsFile, Kind::CouponCampaign, Kind::Manifest] {
        assert!(seen.contains(&kind), "no {kind:?} among the examples");
    }
}

/// The checks catch what rotted before: the campaigns file whose `identity` was never
/// closed, a misspelled field, a value the contract refuses, an unmarked fragment.
#[test]
fn broken_examples_are_caught() {
    let example = |language, text: &str| Example {
        origin: "test".into(),
        language,
        fragment: false,
        text: text.into(),
    };
    let unclosed = r#"{"campaigns": [{"name": "a", "limit": 1, "topic": "t",
        "identity": {"mode": "none"
        "rateLimits": {}}]}"#;
    let zero = r#"{"campaigns": [{"name": "a", "limit": 0, "topic": "t"}]}"#;
    let misspelled = "apiVersion: firstcome.dev/v1alpha1\nkind: CouponCampaign\n\
        metadata: {name: a}\nspec: {limit: 1, identity: {mode: none}, rateLimit: {}}\n";
    let fragment = "spec:\n  limit: 1\n";
    for (language, text, why) in [
        (Language::Json, unclosed, "not JSON"),
        (Language::Json, zero, "limit must be at least 1"),
        (Language::Yaml, misspelled, ".spec.rateLimit"),
        (Language::Yaml, fragment, "mark it ```yaml fragment"),
    ] {
        let error = check(&example(language, text)).unwrap_err();
        assert!(error.contains(why), "{text}: {error}");
    }
    let marked = Example {
        fragment: true,
        ..example(Language::Yaml, fragment)
    };
    assert_eq!(check(&marked), Ok(vec![Kind::Fragment]));
}
