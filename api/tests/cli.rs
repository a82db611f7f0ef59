//! The `catalog` binary's commands that need no server.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn catalog() -> Command {
    Command::new(env!("CARGO_BIN_EXE_catalog"))
}

#[test]
fn validate_accepts_every_example_file() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut files = Vec::new();
    let mut directories = vec![std::path::PathBuf::from(examples)];
    while let Some(directory) = directories.pop() {
        for entry in std::fs::read_dir(directory).unwrap() {
            let path = entry.unwrap().path();
            // Scorecards and policies are not entities (governance reads them).
            if path.is_dir() && !path.ends_with("scorecards") && !path.ends_with("policies") {
                directories.push(path);
            } else if path.is_file() && path.extension().is_some_and(|extension| extension == "yaml") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 5, "{files:?}");
    let output = catalog().arg("validate").args(&files).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.lines().filter(|line| line.contains(": ok ")).count() >= 60, "{stdout}");
}

#[test]
fn validate_rejects_invalid_entities_naming_field_and_rule() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: ok-one\nspec:\n  type: service\n  lifecycle: production\n  owner: team-a\n---\napiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: bad one\nspec:\n  type: service\n  lifecycle: production\n",
    )
    .unwrap();
    let output = catalog().arg("validate").arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(stdout.contains("ok component:default/ok-one"), "{stdout}");
    assert!(stdout.contains("metadata.name") && stdout.contains("name.pattern"), "{stdout}");
    assert!(stdout.contains("spec.owner") && stdout.contains("[rule required]"), "{stdout}");
}

#[test]
fn a_scorecard_is_checked_against_the_stored_catalog_or_refused_with_its_problems() {
    let directory = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", directory.path().join("catalog.db").display());
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let run = |args: &[&str]| {
        catalog()
            .env("CATALOG_DATABASE__URL", &url)
            .env(
                "CATALOG_INGESTION__PROVIDERS",
                format!(r#"[{{"type": "file", "paths": ["{examples}/catalog-info.yaml"]}}]"#),
            )
            // The example policies hold the proposed services for review.
            .env("CATALOG_GOVERNANCE__POLICIES", format!(r#"["{examples}/policies"]"#))
            .args(args)
            .output()
            .unwrap()
    };
    let ingested = run(&["ingest", "--once"]);
    assert!(ingested.status.success(), "{}", String::from_utf8_lossy(&ingested.stderr));

    let readiness = format!("{examples}/scorecards/production-readiness.yaml");
    let checked = run(&["scorecard", "check", "--json", &readiness]);
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    let preview: serde_json::Value = serde_json::from_slice(&checked.stdout).unwrap();
    assert_eq!(preview["scorecard"], "production-readiness");
    assert_eq!(preview["evaluated"], 9, "the example services");
    let described = preview["rules"].as_array().unwrap().iter().find(|rule| rule["rule"] == "described").unwrap();
    assert_eq!((described["pass"].as_u64(), described["fail"].as_u64()), (Some(6), Some(3)), "{described}");
    assert_eq!(described["exempt"], 1, "event-bus is exempt until its entry is rewritten");
    let failure = &preview["failures"][0];
    assert_eq!(failure["result"]["explanation"]["path"], "metadata.description", "{failure}");

    let broken = directory.path().join("broken.yaml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&readiness).unwrap().replace("system() != null", "system( != null"),
    )
    .unwrap();
    let refused = run(&["scorecard", "check", broken.to_str().unwrap()]);
    assert!(!refused.status.success());
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert!(stdout.contains("levels[1].rules[0].expression:1:"), "{stdout}");
}

#[test]
fn schema_prints_the_sdl() {
    let output = catalog().arg("schema").output().unwrap();
    assert!(output.status.success());
    let sdl = String::from_utf8_lossy(&output.stdout);
    assert!(sdl.contains("interface Entity") && sdl.contains("type Component implements Entity"), "{sdl}");
}

#[test]
fn tokens_are_printed_once_listed_without_secrets_and_revoked_by_name() {
    let directory = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", directory.path().join("catalog.db").display());
    let run = |args: &[&str]| catalog().env("CATALOG_DATABASE__URL", &url).args(args).output().unwrap();
    let created =
        run(&["token", "create", "--name", "dashboards", "--scopes", "entity.read", "--expires-in-days", "30"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let token = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    assert!(token.starts_with("ctk_") && token.len() > 60, "{token}");

    let listed = run(&["token", "list"]);
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(listing.contains("dashboards\tactive\tscopes=entity.read"), "{listing}");
    // `ctk_ID_SECRET`; the secret is URL-safe base64 and may itself hold `_`.
    let secret = token.splitn(3, '_').nth(2).unwrap();
    assert!(!listing.contains(secret), "the secret is never shown again");

    let again = run(&["token", "create", "--name", "dashboards", "--scopes", "entity.read"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    let bad_scope = run(&["token", "create", "--name", "other", "--scopes", "entity.write"]);
    assert!(!bad_scope.status.success());
    assert!(String::from_utf8_lossy(&bad_scope.stderr).contains("unknown scope \"entity.write\""));

    assert!(run(&["token", "revoke", "--name", "dashboards"]).status.success());
    assert!(String::from_utf8_lossy(&run(&["token", "list"]).stdout).contains("dashboards\trevoked"));
    assert!(!run(&["token", "revoke", "--name", "dashboards"]).status.success(), "already revoked");
}

#[test]
fn config_check_prints_every_problem_with_its_path_and_fails() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("catalog.yaml");
    std::fs::write(&file, "server:\n  prot: 1\ndatabase:\n  statement_timeout_seconds: never\n").unwrap();
    let output = catalog().args(["config", "check"]).arg(&file).env_remove("CATALOG_CONFIG").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("server.prot: unknown key (did you mean port?)"), "{stdout}");
    assert!(stdout.contains("database:") && stdout.contains("never"), "{stdout}");
    let good = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/production.yaml");
    let output = catalog().args(["config", "check", good]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
}

#[test]
fn config_check_ignores_an_unrelated_catalog_variable_and_refuses_an_unknown_section_key() {
    let good = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/production.yaml");
    let output = catalog()
        .args(["config", "check", good])
        .env("CATALOG_BIN", "/opt/not-for-the-logs")
        .env_remove("CATALOG_LOG")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("CATALOG_BIN"), "warns naming the variable: {stderr}");
    assert!(!stderr.contains("not-for-the-logs"), "never its value: {stderr}");

    let output = catalog().args(["config", "check", good]).env("CATALOG_SERVER__NOPE", "1").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("server.nope: unknown key"), "{stdout}");
}
