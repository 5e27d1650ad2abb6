"""Infrastructure every layer uses: where files are, and the errors a user sees."""
