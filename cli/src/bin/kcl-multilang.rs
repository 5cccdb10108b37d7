//! `kcl-multilang`: the MultiLangDaemon without a JVM, under the name users put in place of
//! `java` (`amazon_kclpy_helper.py --print_command --java kcl-multilang`, `kcl-bootstrap
//! --java "$(command -v kcl-multilang)" -e`). It is `kinesis-cat multilang`: this program
//! replaces itself with the `kinesis-cat` installed beside it, started under this name.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Ok(this) = std::env::current_exe() else {
        eprintln!("kcl-multilang: cannot find its own path to locate kinesis-cat beside it");
        return ExitCode::FAILURE;
    };
    let kinesis_cat = this.with_file_name(format!("kinesis-cat{}", std::env::consts::EXE_SUFFIX));
    let mut command = std::process::Command::new(&kinesis_cat);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        command.args(std::env::args_os().skip(1));
        // exec: signals (SIGTERM) reach the daemon itself, and there is one process.
        let error = command.arg0("kcl-multilang").exec();
        eprintln!(
            "kcl-multilang: cannot run {} (install kinesis-cat beside kcl-multilang): {error}",
            kinesis_cat.display()
        );
        ExitCode::FAILURE
    }
    #[cfg(not(unix))]
    {
        command.arg("multilang").args(std::env::args_os().skip(1));
        match command.status() {
            Ok(status) if status.success() => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(error) => {
                eprintln!(
                    "kcl-multilang: cannot run {} (install kinesis-cat beside kcl-multilang): {error}",
                    kinesis_cat.display()
                );
                ExitCode::FAILURE
            }
        }
    }
}
