//! The architecture's rules as tests. Each failure names the file and what
//! to do about it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use quote::ToTokens;
use syn::visit::Visit;

/// The workspace's root: two levels above this crate.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_owned()
}

/// The crates under `crates/`, by directory name.
fn crates() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.path().join("Cargo.toml").exists())
        .map(|entry| entry.file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn proto_crates() -> Vec<String> {
    crates()
        .into_iter()
        .filter(|name| name.ends_with("-proto"))
        .collect()
}

/// Every Rust file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "rs"))
        .map(|entry| entry.into_path())
        .collect()
}

fn parse(path: &Path) -> syn::File {
    let source = std::fs::read_to_string(path).unwrap();
    syn::parse_file(&source).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

// ----- sans-IO cores -----

/// What the sans-IO `clippy.toml` must refuse.
const SANS_IO_BANS: &[&str] = &[
    "std::time::Instant::now",
    "std::time::SystemTime::now",
    "std::thread::sleep",
    "std::thread::spawn",
    "std::net::TcpStream",
    "std::net::UdpSocket",
    "std::fs::File",
    "std::fs::read",
    "std::fs::write",
];

#[test]
fn every_proto_crate_has_the_sans_io_clippy_toml() {
    let protos = proto_crates();
    assert!(protos.len() >= 7, "found only {protos:?}");
    let mut missing = Vec::new();
    for name in &protos {
        let path = root().join("crates").join(name).join("clippy.toml");
        let Ok(text) = std::fs::read_to_string(&path) else {
            missing.push(format!("{}: no such file", relative(&path)));
            continue;
        };
        for ban in SANS_IO_BANS {
            if !text.contains(&format!("\"{ban}\"")) {
                missing.push(format!("{}: does not ban {ban}", relative(&path)));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "every *-proto crate is a sans-IO core; copy crates/fogwire-link-proto/clippy.toml:\n{}",
        missing.join("\n")
    );
}

/// Crates a sans-IO core must not depend on, even indirectly: async
/// runtimes and sockets, databases, the file system.
const NOT_IN_A_CORE: &[&str] = &[
    "tokio",
    "mio",
    "socket2",
    "async-std",
    "hyper",
    "reqwest",
    "axum",
    "redb",
    "rusqlite",
    "sled",
    "walkdir",
    "tempfile",
    "notify",
    "memmap2",
    "fs-err",
];

/// The platform this builds for, as `rustc -vV` names it.
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = std::process::Command::new(rustc)
        .arg("-vV")
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}

/// `cargo metadata` for the workspace, offline (the lock file decides),
/// for this platform: the packages of other platforms (Windows, Android…)
/// are never downloaded by a build here, so offline they cannot be read.
fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", &host_triple()])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn no_proto_crate_depends_on_a_runtime_a_database_or_the_file_system() {
    let metadata = metadata();
    let names: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| {
            (
                package["id"].as_str().unwrap(),
                package["name"].as_str().unwrap(),
            )
        })
        .collect();
    // Each package's normal (not dev, not build) dependencies.
    let mut normal: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for node in metadata["resolve"]["nodes"].as_array().unwrap() {
        let deps = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|dep| {
                dep["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|kind| kind["kind"].is_null())
            })
            .map(|dep| dep["pkg"].as_str().unwrap())
            .collect();
        normal.insert(node["id"].as_str().unwrap(), deps);
    }
    let mut found = Vec::new();
    for proto in proto_crates() {
        let id = names
            .iter()
            .find_map(|(id, name)| (*name == proto).then_some(*id))
            .unwrap();
        // Walk the normal dependencies, remembering how each was reached.
        let mut via: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = vec![id];
        let mut seen = BTreeSet::from([id]);
        while let Some(package) = queue.pop() {
            for &dep in normal.get(package).into_iter().flatten() {
                if seen.insert(dep) {
                    via.insert(dep, package);
                    queue.push(dep);
                }
            }
        }
        for &dep in &seen {
            if NOT_IN_A_CORE.contains(&names[dep]) {
                let mut chain = vec![names[dep]];
                let mut at = dep;
                while let Some(&parent) = via.get(at) {
                    chain.push(names[parent]);
                    at = parent;
                }
                chain.reverse();
                found.push(chain.join(" → "));
            }
        }
    }
    assert!(
        found.is_empty(),
        "a sans-IO core depends on I/O; move that code to its driver crate:\n{}",
        found.join("\n")
    );
}

// ----- the code map -----

#[test]
fn every_crate_is_in_the_code_map_and_every_entry_is_a_crate() {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mapped: BTreeSet<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("### `crates/"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_owned)
        .collect();
    let crates: BTreeSet<String> = crates().into_iter().collect();
    let unmapped: Vec<_> = crates.difference(&mapped).collect();
    let stale: Vec<_> = mapped.difference(&crates).collect();
    assert!(
        unmapped.is_empty(),
        "crates missing from ARCHITECTURE.md's code map (add a \"### `crates/<name>`\" entry: what it owns, what it must not know): {unmapped:?}"
    );
    assert!(
        stale.is_empty(),
        "ARCHITECTURE.md maps crates that do not exist: {stale:?}"
    );
}

// ----- bounded queues -----

/// Finds unbounded channels: anything named `unbounded…` (tokio's
/// `unbounded_channel`, flume's and crossbeam's `unbounded`) and a
/// `channel()` called with no capacity (std's `mpsc::channel`), but for
/// `oneshot::channel()`. Conservative: a function of our own named
/// `channel` with no arguments is flagged too; name it for what it makes.
#[derive(Default)]
struct Unbounded {
    found: Vec<String>,
}

impl<'ast> Visit<'ast> for Unbounded {
    fn visit_ident(&mut self, ident: &'ast syn::Ident) {
        let name = ident.to_string();
        if name.starts_with("unbounded") || name.starts_with("Unbounded") {
            self.found.push(name);
        }
    }

    fn visit_expr_call(&mut self, call: &'ast syn::ExprCall) {
        if let syn::Expr::Path(path) = &*call.func {
            let segments: Vec<String> = path
                .path
                .segments
                .iter()
                .map(|segment| segment.ident.to_string())
                .collect();
            // A oneshot channel holds one value: bounded by its nature.
            let oneshot = segments.iter().rev().nth(1).is_some_and(|s| s == "oneshot");
            if segments.last().is_some_and(|last| last == "channel")
                && call.args.is_empty()
                && !oneshot
            {
                self.found
                    .push(format!("{}()", path.path.to_token_stream()).replace(' ', ""));
            }
        }
        syn::visit::visit_expr_call(self, call);
    }
}

#[test]
fn no_channel_is_unbounded() {
    let mut found = Vec::new();
    for path in rust_files(&root().join("crates")) {
        if path.starts_with(root().join("crates/fogwire-tidy")) {
            continue;
        }
        let mut visitor = Unbounded::default();
        visitor.visit_file(&parse(&path));
        for what in visitor.found {
            found.push(format!("{}: {what}", relative(&path)));
        }
    }
    assert!(
        found.is_empty(),
        "every queue has a limit; use a bounded channel and decide what happens when it is full:\n{}",
        found.join("\n")
    );
}

// ----- typed errors -----

/// Finds public functions and trait methods that return
/// `Result<_, String>`, outside `#[cfg(test)]` modules.
#[derive(Default)]
struct StringErrors {
    found: Vec<String>,
    /// Whether the trait being visited is public.
    in_public_trait: bool,
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg") && attr.meta.to_token_stream().to_string().contains("test")
    })
}

fn is_public(vis: &syn::Visibility) -> bool {
    matches!(vis, syn::Visibility::Public(_))
}

/// Whether `output` is `Result<_, String>`.
fn returns_string_error(output: &syn::ReturnType) -> bool {
    let syn::ReturnType::Type(_, ty) = output else {
        return false;
    };
    let syn::Type::Path(path) = &**ty else {
        return false;
    };
    let Some(last) = path.path.segments.last() else {
        return false;
    };
    if last.ident != "Result" {
        return false;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return false;
    };
    args.args.iter().nth(1).is_some_and(|arg| {
        matches!(arg, syn::GenericArgument::Type(syn::Type::Path(error))
            if error.path.is_ident("String"))
    })
}

impl<'ast> Visit<'ast> for StringErrors {
    fn visit_item_mod(&mut self, module: &'ast syn::ItemMod) {
        if !is_cfg_test(&module.attrs) {
            syn::visit::visit_item_mod(self, module);
        }
    }

    fn visit_item_fn(&mut self, function: &'ast syn::ItemFn) {
        if is_public(&function.vis) && returns_string_error(&function.sig.output) {
            self.found.push(format!("fn {}", function.sig.ident));
        }
    }

    fn visit_item_impl(&mut self, item: &'ast syn::ItemImpl) {
        // A trait's methods are checked where the trait is declared.
        if item.trait_.is_some() || is_cfg_test(&item.attrs) {
            return;
        }
        for member in &item.items {
            if let syn::ImplItem::Fn(method) = member
                && is_public(&method.vis)
                && returns_string_error(&method.sig.output)
            {
                let ty = item.self_ty.to_token_stream().to_string();
                self.found.push(format!("{ty}::{}", method.sig.ident));
            }
        }
    }

    fn visit_item_trait(&mut self, item: &'ast syn::ItemTrait) {
        self.in_public_trait = is_public(&item.vis);
        syn::visit::visit_item_trait(self, item);
        self.in_public_trait = false;
    }

    fn visit_trait_item_fn(&mut self, method: &'ast syn::TraitItemFn) {
        if self.in_public_trait && returns_string_error(&method.sig.output) {
            self.found
                .push(format!("trait method {}", method.sig.ident));
        }
    }
}

#[test]
fn no_public_function_returns_a_string_as_its_error() {
    let mut found = Vec::new();
    for name in crates() {
        for path in rust_files(&root().join("crates").join(&name).join("src")) {
            let mut visitor = StringErrors::default();
            visitor.visit_file(&parse(&path));
            for what in visitor.found {
                found.push(format!("{}: {what}", relative(&path)));
            }
        }
    }
    assert!(
        found.is_empty(),
        "a public seam returns a typed error (thiserror) that callers can match on, not a String:\n{}",
        found.join("\n")
    );
}

// ----- the checks themselves -----

#[test]
fn the_checks_find_what_they_look_for() {
    let source = r#"
        pub fn bad() -> Result<(), String> { Ok(()) }
        fn private() -> Result<(), String> { Ok(()) }
        pub fn typed() -> Result<(), std::io::Error> { Ok(()) }
        pub trait Seam { fn call(&self) -> Result<u8, String>; }
        pub struct S;
        impl S { pub fn method(&self) -> Result<u8, String> { Ok(1) } }
        #[cfg(test)]
        mod tests { pub fn helper() -> Result<(), String> { Ok(()) } }
        fn queues() {
            let (a, b) = tokio::sync::mpsc::unbounded_channel::<u8>();
            let (c, d) = std::sync::mpsc::channel::<u8>();
            let (e, f) = tokio::sync::mpsc::channel::<u8>(8);
            let (g, h) = tokio::sync::oneshot::channel::<u8>();
        }
    "#;
    let file = syn::parse_file(source).unwrap();
    let mut errors = StringErrors::default();
    errors.visit_file(&file);
    assert_eq!(
        errors.found,
        vec!["fn bad", "trait method call", "S::method"],
        "{:?}",
        errors.found
    );
    let mut queues = Unbounded::default();
    queues.visit_file(&file);
    assert_eq!(
        queues.found,
        vec!["unbounded_channel", "std::sync::mpsc::channel::<u8>()"]
    );
}

/// The node is the composition root and stays small: what grows belongs
/// in the crate that owns it (ARCHITECTURE.md).
#[test]
fn the_node_crate_stays_under_2500_lines() {
    let lines: usize = rust_files(&root().join("crates/fogwire-node/src"))
        .iter()
        .map(|path| std::fs::read_to_string(path).unwrap().lines().count())
        .sum();
    assert!(
        lines < 2_500,
        "crates/fogwire-node/src has {lines} lines: move what is not composition into the crate that owns it"
    );
}
