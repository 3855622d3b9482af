//! How a waiting room's page looks to customers: its title, message and two colours,
//! set per campaign. The text is shown escaped; the bounds here are the only rule on it.

use serde::{Deserialize, Serialize};

/// Longest page title, in characters.
pub const MAX_PAGE_TITLE_CHARS: usize = 80;
/// Longest page message, in characters.
pub const MAX_PAGE_MESSAGE_CHARS: usize = 500;
/// A colour is `#rrggbb`: nothing else can reach the page's style sheet.
pub const PAGE_COLOR_PATTERN: &str = "^#[0-9a-fA-F]{6}$";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoomPage {
    /// The page's heading and `<title>`.
    #[serde(default = "default_page_title")]
    pub title: String,
    /// A paragraph under the heading; empty: none.
    #[serde(default)]
    pub message: String,
    /// Buttons, links and the progress marks.
    #[serde(default = "default_page_accent")]
    pub accent_color: String,
    /// The page's background.
    #[serde(default = "default_page_background")]
    pub background_color: String,
}

/// What is wrong with a page's settings.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoomPageProblem {
    #[error("page.title must be 1 to {MAX_PAGE_TITLE_CHARS} characters")]
    Title,
    #[error("page.message must be at most {MAX_PAGE_MESSAGE_CHARS} characters")]
    Message,
    #[error("page.accentColor must be #rrggbb")]
    AccentColor,
    #[error("page.backgroundColor must be #rrggbb")]
    BackgroundColor,
}

pub fn default_page_title() -> String {
    "Waiting room".into()
}

pub fn default_page_accent() -> String {
    "#1d4ed8".into()
}

pub fn default_page_background() -> String {
    "#ffffff".into()
}

impl Default for RoomPage {
    fn default() -> Self {
        Self {
            title: default_page_title(),
            message: String::new(),
            accent_color: default_page_accent(),
            background_color: default_page_background(),
        }
    }
}

impl RoomPage {
    pub fn validate(&self) -> Result<(), RoomPageProblem> {
        if !(1..=MAX_PAGE_TITLE_CHARS).contains(&self.title.chars().count()) {
            return Err(RoomPageProblem::Title);
        }
        if self.message.chars().count() > MAX_PAGE_MESSAGE_CHARS {
            return Err(RoomPageProblem::Message);
        }
        if !is_color(&self.accent_color) {
            return Err(RoomPageProblem::AccentColor);
        }
        if !is_color(&self.background_color) {
            return Err(RoomPageProblem::BackgroundColor);
        }
        Ok(())
    }
}

/// Whether `s` is `#rrggbb` ([`PAGE_COLOR_PATTERN`]).
fn is_color(s: &str) -> bool {
    s.len() == 7 && s.starts_with('#') && s.bytes().skip(1).all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_fill_what_a_file_leaves_out() {
        let page: RoomPage = serde_json::from_str(r#"{"title":"Sale"}"#).unwrap();
        assert_eq!(
            page,
            RoomPage {
                title: "Sale".into(),
                ..RoomPage::default()
            }
        );
        assert_eq!(RoomPage::default().validate(), Ok(()));
    }

    #[test]
    fn each_bad_setting_is_named() {
        let ok = RoomPage::default();
        let with = |f: fn(&mut RoomPage)| {
            let mut page = ok.clone();
            f(&mut page);
            page.validate()
        };
        assert_eq!(with(|p| p.title.clear()), Err(RoomPageProblem::Title));
        assert_eq!(
            with(|p| p.title = "é".repeat(MAX_PAGE_TITLE_CHARS + 1)),
            Err(RoomPageProblem::Title)
        );
        assert_eq!(with(|p| p.title = "é".repeat(MAX_PAGE_TITLE_CHARS)), Ok(()));
        assert_eq!(
            with(|p| p.message = "m".repeat(MAX_PAGE_MESSAGE_CHARS + 1)),
            Err(RoomPageProblem::Message)
        );
        for bad in ["red", "#fff", "#12345g", "#1234567", "#12345;", "1234567"] {
            let mut page = ok.clone();
            page.accent_color = bad.into();
            assert_eq!(page.validate(), Err(RoomPageProblem::AccentColor), "{bad}");
            let mut page = ok.clone();
            page.background_color = bad.into();
            assert_eq!(page.validate(), Err(RoomPageProblem::BackgroundColor));
        }
        assert_eq!(with(|p| p.accent_color = "#A1b2C3".into()), Ok(()));
    }
}
