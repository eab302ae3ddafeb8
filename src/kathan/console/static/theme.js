// Loaded before the style sheet applies, so the page never flashes the wrong theme.
// The theme choice is the only thing the console keeps in localStorage.
try {
  const theme = localStorage.getItem("kathan.theme");
  if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
} catch {
  /* no storage: follow the system */
}
