//! Command-line parsing shared by `edgevit` and `edgevit-tools`: `--version`, and argh's
//! errors prefixed with the program's name and pointing to the subcommand's `--help`.

/// Parses `args` (without the program name) into `T`. `--version` (or `-V`) as the only
/// argument prints [`crate::version::describe`]; `--help` prints argh's help; both exit 0. An
/// error prints one line naming the problem and where the options are listed, and exits 1.
pub fn parse<T: argh::FromArgs>(program: &str, args: &[&str]) -> T {
    if matches!(args, ["--version"] | ["-V"]) {
        print!("{}", crate::version::describe(program));
        std::process::exit(0);
    }
    match T::from_args(&[program], args) {
        Ok(parsed) => parsed,
        Err(argh::EarlyExit { output, status: Ok(()) }) => {
            print!("{output}");
            std::process::exit(0)
        }
        Err(argh::EarlyExit { output, status: Err(()) }) => {
            // argh's own pointer names the top-level help; the subcommand's lists the options.
            let lines: Vec<&str> = output
                .lines()
                .take_while(|l| !l.starts_with("Run "))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let message = if lines.is_empty() { "invalid arguments".to_string() } else { lines.join(" ") };
            // The subcommand's help, unless the subcommand itself is what argh did not know.
            let help = match args.first().filter(|a| !a.starts_with('-')) {
                Some(sub) if message != format!("Unrecognized argument: {sub}") => format!("{program} {sub} --help"),
                _ => format!("{program} --help"),
            };
            eprintln!("{program}: {message} (see `{help}`)");
            std::process::exit(1)
        }
    }
}
