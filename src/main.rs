//! The `wxsession` binary: parse flags, load the configuration, start logging, serve.

use std::{path::PathBuf, process::ExitCode};

use wxsession::{config::Config, telemetry};

const HELP: &str = "\
wxsession — session server for WeChat Mini Programs

USAGE:
    wxsession [--config PATH] [serve]

FLAGS:
    -c, --config PATH   configuration file (default: config.toml in the working
                        directory; if that default is missing, built-in defaults
                        and WXSESSION_* variables are used)
    -h, --help          print this help
    -V, --version       print the version

COMMANDS:
    serve               run the HTTP server (the default)

Every configuration key can be overridden by WXSESSION_<SECTION>_<KEY>,
e.g. WXSESSION_REDIS_URL, WXSESSION_WECHAT_SECRET. Logging: RUST_LOG (default info).
";

fn main() -> ExitCode {
    let mut config_path: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                return ExitCode::SUCCESS;
            }
            "-V" | "--version" => {
                println!("wxsession {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "-c" | "--config" => match args.next() {
                Some(path) => config_path = Some(path.into()),
                None => return usage_error("--config needs a PATH"),
            },
            "serve" => {}
            other => return usage_error(&format!("unknown argument {other:?}")),
        }
    }
    let required = config_path.is_some();
    let path = config_path.unwrap_or_else(|| PathBuf::from("config.toml"));
    let config = match Config::load(&path, required) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("wxsession: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_logging();
    if config.wechat.mock {
        log::warn!("==================================================================");
        log::warn!("wechat.mock = true: logins are NOT checked with WeChat. Any code");
        log::warn!("logs in. For development only; never run this in production.");
        log::warn!("==================================================================");
    }
    let served = actix_web::rt::System::new().block_on(wxsession::http::serve(config));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("server stopped: {e}");
            eprintln!("wxsession: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("wxsession: {message}\nTry 'wxsession --help'.");
    ExitCode::from(2)
}
