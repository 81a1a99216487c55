"""miscord-sfu diagnostics: timelines, stats, audio levels, reports, metrics."""
