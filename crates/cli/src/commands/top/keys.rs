//! Which key does what in `rota top`: a key press → an [`Action`], given whether a cancel
//! is waiting for y/n. Pure; acting on it is the run loop's job. The help pane is built
//! from [`BINDINGS`]; a test checks that `rota top --help` names every key.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// What a key asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Quit,
    /// Esc: closes help, the log pane or a question, else quits.
    Back,
    NextPane,
    PrevPane,
    Up,
    Down,
    Heal,
    Cancel,
    Answer(bool),
    Logs,
    Help,
    Refresh,
}

/// The keys, as the help pane and `rota top --help` list them.
pub(crate) const BINDINGS: &[(&str, &str)] = &[
    ("↑/↓ j/k", "move the selection"),
    ("Tab/S-Tab", "switch pane (fleet, queues, running jobs)"),
    ("h", "heal the fleet (failed background workers, as `rota worker heal --fleet`)"),
    ("c", "cancel the selected running job (asks y/n)"),
    ("l/Enter", "show or hide the selected job's log tail"),
    ("r", "refresh now"),
    ("?", "show or hide this help"),
    ("q/Esc/Ctrl-C", "quit (Esc closes help, logs or a question first)"),
];

/// The action of `key`; `None` for keys that do nothing (and key releases). While a cancel
/// waits for its answer only y, n, Esc and Ctrl-C count.
pub(crate) fn action(key: &KeyEvent, confirming: bool) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    if key.modifiers.contains(KeyModifiers::CONTROL) {
        return matches!(key.code, KeyCode::Char('c')).then_some(Action::Quit);
    }
    if confirming {
        return match key.code {
            KeyCode::Char('y' | 'Y') => Some(Action::Answer(true)),
            KeyCode::Char('n' | 'N') | KeyCode::Esc => Some(Action::Answer(false)),
            _ => None,
        };
    }
    Some(match key.code {
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Esc => Action::Back,
        KeyCode::Tab => Action::NextPane,
        KeyCode::BackTab => Action::PrevPane,
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::Char('h') => Action::Heal,
        KeyCode::Char('c') => Action::Cancel,
        KeyCode::Char('l') | KeyCode::Enter => Action::Logs,
        KeyCode::Char('r') => Action::Refresh,
        KeyCode::Char('?') => Action::Help,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn keys_map_to_actions() {
        assert_eq!(action(&key(KeyCode::Char('h')), false), Some(Action::Heal));
        assert_eq!(action(&key(KeyCode::Tab), false), Some(Action::NextPane));
        assert_eq!(action(&key(KeyCode::Char('q')), false), Some(Action::Quit));
        assert_eq!(
            action(&KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL), false),
            Some(Action::Quit)
        );
        assert_eq!(action(&key(KeyCode::Char('x')), false), None);
    }

    #[test]
    fn the_command_help_names_every_key() {
        use clap::CommandFactory;
        let mut cli = crate::args::Cli::command();
        let top = cli.find_subcommand_mut("top").expect("a top command");
        let help = top.render_long_help().to_string();
        for (keys, _) in BINDINGS {
            assert!(help.contains(keys), "{keys:?} not in rota top --help:\n{help}");
        }
    }

    #[test]
    fn a_question_takes_only_its_answer() {
        assert_eq!(action(&key(KeyCode::Char('y')), true), Some(Action::Answer(true)));
        assert_eq!(action(&key(KeyCode::Esc), true), Some(Action::Answer(false)));
        assert_eq!(action(&key(KeyCode::Char('q')), true), None);
        assert_eq!(
            action(&KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL), true),
            Some(Action::Quit)
        );
    }
}
