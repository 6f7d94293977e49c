//! The `wxsession` binary: parse the command line, load the configuration, then
//! serve or run an operator's subcommand.

use std::{path::PathBuf, process::ExitCode};

use wxsession::{
    cli::{self, Args, Command},
    config::Config,
    telemetry, wechat,
};

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("wxsession: {message}\nTry 'wxsession --help'.");
            return ExitCode::from(2);
        }
    };
    match args.command {
        Command::Help => {
            print!("{}", cli::HELP);
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("wxsession {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Serve
        | Command::Sessions(_)
        | Command::Users(_)
        | Command::Wechat(_)
        | Command::AppsList
        | Command::CheckConfig { .. } => {}
    }
    let required = args.config.is_some();
    let path = args.config.unwrap_or_else(|| PathBuf::from("config.toml"));
    // check-config loads exactly as the server does: same loader, same one
    // line naming the key, same exit code 2.
    let config = match Config::load(&path, required) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("wxsession: {e}");
            return ExitCode::from(2);
        }
    };
    // What only the platform clients can check (an Alipay app's keys) stops
    // the start the same way.
    if let Err(e) = wechat::Apps::check(&config) {
        eprintln!("wxsession: configuration error: {e}");
        return ExitCode::from(2);
    }
    telemetry::init_logging();
    match args.command {
        Command::Sessions(command) => cli::run_sessions(&config, args.appid.as_deref(), command),
        Command::Users(command) => cli::run_users(&config, args.appid.as_deref(), command),
        Command::Wechat(command) => cli::run_wechat(&config, args.appid.as_deref(), command),
        Command::AppsList => cli::run_apps_list(&config),
        Command::CheckConfig { connect } => cli::run_check_config(&config, &path, connect),
        _ => serve(config),
    }
}

fn serve(config: Config) -> ExitCode {
    for app in config.apps().iter().filter(|app| app.mock) {
        log::warn!("==================================================================");
        log::warn!(
            "app {}: mock = true: logins are NOT checked with {}. Any code",
            app.name,
            app.platform.as_str()
        );
        log::warn!("logs in. For development only; never run this in production.");
        log::warn!("==================================================================");
    }
    match actix_web::rt::System::new().block_on(wxsession::http::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, on stderr, like every other start-up failure.
            eprintln!("wxsession: {e}");
            ExitCode::FAILURE
        }
    }
}
