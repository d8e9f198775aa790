//! `drover completions SHELL` and `drover man`: the shell completion script and the roff man
//! page, generated from the same clap definition that parses the command line, so they can
//! never list a command or option that does not exist. Packagers write them to files at
//! build time (`scripts/package`); neither needs a config file.

use std::io::{self, Write};

use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: Shell, out: &mut dyn Write) -> io::Result<()> {
    let mut cmd = Cli::command();
    // Into a buffer first: clap_complete panics on a write error (`| head` closing the pipe).
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "drover", &mut buf);
    out.write_all(&buf)
}

/// Writes drover(1), with a section per subcommand, to `out`.
pub fn man(out: &mut dyn Write) -> io::Result<()> {
    let cmd = Cli::command();
    let page = clap_mangen::Man::new(cmd.clone());
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    page.render_description_section(out)?;
    page.render_options_section(out)?;
    render_subcommands(&cmd, out)?;
    render_exit_status(out)?;
    page.render_version_section(out)?;
    Ok(())
}

/// One subsection per command with its synopsis, arguments and options.
fn render_subcommands(cmd: &clap::Command, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, ".SH COMMANDS")?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name();
        let sub = sub.clone().bin_name(format!("drover {name}"));
        writeln!(out, ".SS \"drover {name}\"")?;
        let page = clap_mangen::Man::new(sub);
        let mut buf = Vec::new();
        page.render_synopsis_section(&mut buf)?;
        page.render_description_section(&mut buf)?;
        page.render_options_section(&mut buf)?;
        // Demote the sections clap_mangen writes to paragraphs inside this subsection.
        let text = String::from_utf8_lossy(&buf).replace(".SH ", ".TP\n.B ");
        out.write_all(text.as_bytes())?;
    }
    Ok(())
}

fn render_exit_status(out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        ".SH \"EXIT STATUS\"\n.TP\n0\nsuccess\n.TP\n1\na problem found, a failure or a timeout\n\
         .TP\n2\na bad config file or command line (systemd's RestartPreventExitStatus=2)"
    )
}
