# Reference values for cmvtrial.analysis.nonparametric, computed by R's wilcox.test.
#
# Produce them (from the repository root) with:
#     Rscript tests/reference/nonparametric/make_reference.R
# R 4.2.2 (Debian bookworm: apt-get install r-base-core). Run it after
# tests/reference/ancova/make_reference.R, whose markers.csv it reads.
# Writes samples.csv (case, group, value) and reference.json next to this file.
#
# Call: wilcox.test(x, y, conf.int = TRUE) with x the IL-2 arm, y the control arm. The cases
# cover R's three paths: exact (both n < 50, no ties), normal approximation because of ties, and
# normal approximation because n >= 50; plus small samples where the exact CI is coarse.

here <- "tests/reference/nonparametric"
source("tests/reference/json_writer.R")
markers <- read.csv("tests/reference/ancova/markers.csv")

set.seed(20240614)
change <- function(m) markers[[paste0("week12_", m)]] - markers[[paste0("baseline_", m)]]
cases <- list()
for (m in c("nk_count", "nk_pct", "treg_pct", "c3")) {
  v <- round(change(m), 10)  # drop float noise of the subtraction so the CSV holds exactly these values
  keep <- !is.na(v)
  cases[[m]] <- list(x = v[keep & markers$arm == "il2"], y = v[keep & markers$arm == "control"])
}
cases$large <- list(x = round(rnorm(60, 1.2, 2), 6), y = round(rnorm(55, 0, 2), 6))
cases$large_ties <- list(x = round(rnorm(70, 1, 2)), y = round(rnorm(64, 0, 2)))
cases$small <- list(x = c(1.83, 0.50, 1.62, 2.48, 1.68), y = c(0.878, 0.647, 0.598, 2.05))
cases$tiny <- list(x = c(3.1, 4.2), y = c(1.5, 2.7, 0.4))
cases$shifted_ties <- list(x = c(2, 3, 3, 5, 8, 9, 9, 12), y = c(1, 1, 2, 4, 4, 6, 7))

rows <- list()
out <- list()
for (name in names(cases)) {
  x <- cases[[name]]$x
  y <- cases[[name]]$y
  rows[[name]] <- rbind(data.frame(case = name, group = "x", value = x), data.frame(case = name, group = "y", value = y))
  w <- suppressWarnings(wilcox.test(x, y, conf.int = TRUE))
  out[[name]] <- list(
    w = unname(w$statistic), p = w$p.value, estimate = unname(w$estimate),
    lower = w$conf.int[1], upper = w$conf.int[2], conf_level = attr(w$conf.int, "conf.level"),
    method = w$method, n_x = length(x), n_y = length(y)
  )
}
write.csv(do.call(rbind, rows), file.path(here, "samples.csv"), row.names = FALSE)
out$versions <- list(R = R.version.string)
write_json(out, file.path(here, "reference.json"))
