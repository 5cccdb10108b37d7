//! The daemon's command line: the Java MultiLangDaemon's own arguments
//! (`[file] [-p|--properties-file F] [-l|--log-configuration F]`), and, so that this binary
//! can stand in for `java` in the commands `amazon_kclpy_helper.py --print_command --java X`
//! prints and `kcl-bootstrap --java X -e` runs, the JVM's: `-cp|-classpath CP` is taken (its
//! folders are where the properties file is looked for next), `-D...`/`-X...` options and the
//! MultiLangDaemon class name are skipped.

use std::path::{Path, PathBuf};

/// The daemon classes of KCL 2.x/3.x and 1.x.
const DAEMON_CLASSES: &[&str] = &[
    "software.amazon.kinesis.multilang.MultiLangDaemon",
    "com.amazonaws.services.kinesis.multilang.MultiLangDaemon",
];

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct DaemonArgs {
    pub(crate) properties_file: Option<String>,
    /// `--log-configuration`: a logback file; noted and ignored (logs: `RUST_LOG`).
    pub(crate) log_configuration: Option<String>,
    pub(crate) classpath: Vec<String>,
    /// JVM options that were skipped (reported once).
    pub(crate) skipped_jvm_options: Vec<String>,
    pub(crate) help: bool,
}

/// A command line that cannot run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ArgsError {
    #[error("{option} needs a value")]
    MissingValue { option: String },
    #[error(
        "unknown option {0:?} (expected [FILE] [-p|--properties-file FILE] [-l|--log-configuration FILE])"
    )]
    UnknownOption(String),
    #[error("more than one properties file: {0:?} and {1:?}")]
    TwoFiles(String, String),
    #[error(
        "no properties file: pass one (as the Java daemon takes it: FILE or --properties-file FILE)"
    )]
    NoFile,
    #[error("properties file {file:?} not found in the working directory{classpath}")]
    NotFound { file: String, classpath: String },
}

pub(crate) const USAGE: &str =
    "usage: kcl-multilang [FILE] [-p|--properties-file FILE] [-l|--log-configuration FILE]
       (also: kinesis-cat multilang ...; JVM options -cp CP, -D..., -X... and the
       MultiLangDaemon class name are accepted, so it can stand in for `java`)";

impl DaemonArgs {
    pub(crate) fn parse<I, S>(args: I) -> Result<Self, ArgsError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut parsed = Self::default();
        let mut positional: Option<String> = None;
        let mut flagged: Option<String> = None;
        let mut args = args.into_iter().map(Into::into);
        while let Some(arg) = args.next() {
            let mut value_of = |option: &str| {
                args.next().ok_or_else(|| ArgsError::MissingValue {
                    option: option.to_owned(),
                })
            };
            match arg.as_str() {
                "-cp" | "-classpath" | "--class-path" => {
                    let classpath = value_of(&arg)?;
                    parsed.classpath.extend(
                        classpath
                            .split(':')
                            .filter(|e| !e.is_empty())
                            .map(str::to_owned),
                    );
                }
                "-p" | "--properties-file" => flagged = Some(value_of(&arg)?),
                "-l" | "--log-configuration" => parsed.log_configuration = Some(value_of(&arg)?),
                "-h" | "--help" => parsed.help = true,
                _ if DAEMON_CLASSES.contains(&arg.as_str()) => {}
                _ if arg.starts_with("-D") || arg.starts_with("-X") => {
                    parsed.skipped_jvm_options.push(arg);
                }
                _ => {
                    if let Some(file) = arg.strip_prefix("--properties-file=") {
                        flagged = Some(file.to_owned());
                    } else if let Some(file) = arg.strip_prefix("--log-configuration=") {
                        parsed.log_configuration = Some(file.to_owned());
                    } else if arg.starts_with('-') && arg.len() > 1 {
                        return Err(ArgsError::UnknownOption(arg));
                    } else if let Some(first) = &positional {
                        return Err(ArgsError::TwoFiles(first.clone(), arg));
                    } else {
                        positional = Some(arg);
                    }
                }
            }
        }
        // As Java: -p overrides the positional file.
        parsed.properties_file = flagged.or(positional);
        Ok(parsed)
    }

    /// The properties file: as given (from the working directory), else in each folder of the
    /// classpath, in order.
    pub(crate) fn resolve_properties(&self) -> Result<PathBuf, ArgsError> {
        let file = self.properties_file.as_deref().ok_or(ArgsError::NoFile)?;
        let direct = Path::new(file);
        if direct.is_file() {
            return Ok(direct.to_path_buf());
        }
        if direct.is_relative() {
            for entry in &self.classpath {
                let candidate = Path::new(entry).join(file);
                if candidate.is_file() {
                    return Ok(candidate);
                }
            }
        }
        Err(ArgsError::NotFound {
            file: file.to_owned(),
            classpath: if self.classpath.is_empty() {
                String::new()
            } else {
                " nor in the classpath folders".to_owned()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_java_daemons_arguments() {
        let args = DaemonArgs::parse(["app.properties"]).unwrap();
        assert_eq!(args.properties_file.as_deref(), Some("app.properties"));
        let args = DaemonArgs::parse([
            "positional.properties",
            "-p",
            "flagged.properties",
            "--log-configuration",
            "logback.xml",
        ])
        .unwrap();
        assert_eq!(args.properties_file.as_deref(), Some("flagged.properties"));
        assert_eq!(args.log_configuration.as_deref(), Some("logback.xml"));
    }

    #[test]
    fn the_command_lines_of_the_client_libraries() {
        // amazon_kclpy_helper.py --print_command --java X --properties samples/sample.properties
        let args = DaemonArgs::parse([
            "-cp",
            "/venv/jars/a.jar:/venv/jars/b.jar:/app/samples",
            "software.amazon.kinesis.multilang.MultiLangDaemon",
            "--properties-file",
            "sample.properties",
        ])
        .unwrap();
        assert_eq!(args.properties_file.as_deref(), Some("sample.properties"));
        assert_eq!(args.classpath.len(), 3);
        // kcl-bootstrap spawns java with -cp ... and JVM options users add.
        let args = DaemonArgs::parse([
            "-Xmx512m",
            "-Daws.cborEnabled=false",
            "-classpath",
            "x.jar",
            "com.amazonaws.services.kinesis.multilang.MultiLangDaemon",
            "--properties-file=./sample.properties",
        ])
        .unwrap();
        assert_eq!(args.properties_file.as_deref(), Some("./sample.properties"));
        assert_eq!(args.skipped_jvm_options.len(), 2);
    }

    #[test]
    fn bad_command_lines() {
        assert_eq!(
            DaemonArgs::parse(["-p"]),
            Err(ArgsError::MissingValue {
                option: "-p".into()
            })
        );
        assert_eq!(
            DaemonArgs::parse(["--verbose-gc"]),
            Err(ArgsError::UnknownOption("--verbose-gc".into()))
        );
        assert_eq!(
            DaemonArgs::parse(["a", "b"]),
            Err(ArgsError::TwoFiles("a".into(), "b".into()))
        );
        assert_eq!(
            DaemonArgs::parse(Vec::<String>::new())
                .unwrap()
                .resolve_properties(),
            Err(ArgsError::NoFile)
        );
    }

    #[test]
    fn the_properties_file_is_looked_up_in_the_classpath_folders() {
        let dir = std::env::temp_dir().join(format!("kcl-multilang-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("only-here.properties"), "a=1\n").unwrap();
        let classpath = format!("/nonexistent/x.jar:{}", dir.display());
        let args = DaemonArgs::parse(["-cp", &classpath, "only-here.properties"]).unwrap();
        assert_eq!(
            args.resolve_properties().unwrap(),
            dir.join("only-here.properties")
        );
        let args = DaemonArgs::parse(["-cp", &classpath, "missing.properties"]).unwrap();
        assert!(matches!(
            args.resolve_properties(),
            Err(ArgsError::NotFound { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
