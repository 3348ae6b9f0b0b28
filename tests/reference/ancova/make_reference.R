# Reference values for cmvtrial.analysis.ancova, computed by R's lm, emmeans and p.adjust.
#
# Produce them (from the repository root) with:
#     Rscript tests/reference/ancova/make_reference.R
# R 4.2.2, emmeans 1.8.4 (Debian bookworm: apt-get install r-base-core r-cran-emmeans).
# Writes markers.csv (one row per subject: arm, strata, baseline_<m>, week12_<m>) and
# reference.json next to this file; the tests only read them.
#
# Analysis (SAP, DESIGN.md section 4): for each marker, change = week12 - baseline;
# lm(change ~ arm + baseline + strata) on complete cases with arm's reference level "control";
# adjusted means by emmeans(fit, ~ arm) (baseline at its mean, strata weighted equally);
# Holm adjustment of the arm p-values across the family of markers.

suppressPackageStartupMessages(library(emmeans))
here <- "tests/reference/ancova"
source("tests/reference/json_writer.R")

set.seed(20240613)
n <- 60
d <- data.frame(
  subject = sprintf("S%02d", 1:n),
  arm = rep(c("il2", "control"), each = n / 2),
  # "SLE" sorts before "other" in patsy but after it in R's locale collation (statistics.md item 6).
  strata = sample(c("SLE", "other"), n, replace = TRUE, prob = c(0.65, 0.35))
)
il2 <- d$arm == "il2"
markers <- list(
  nk_count = list(base = function() rlnorm(n, log(150), 0.5), effect = 60, sd = 45, digits = 0),
  nk_pct = list(base = function() rnorm(n, 9, 3), effect = 3, sd = 2.5, digits = 1),
  cd4_count = list(base = function() rlnorm(n, log(450), 0.4), effect = 40, sd = 90, digits = 4),
  treg_pct = list(base = function() rnorm(n, 4.5, 1.2), effect = 1.4, sd = 1, digits = 4),
  igg = list(base = function() rnorm(n, 11, 2.5), effect = 0.3, sd = 1.5, digits = 4),
  c3 = list(base = function() rnorm(n, 0.75, 0.2), effect = 0.02, sd = 0.12, digits = 4),
  c4 = list(base = function() rnorm(n, 0.14, 0.05), effect = 0.004, sd = 0.03, digits = 4)
)
for (m in names(markers)) {
  spec <- markers[[m]]
  base <- pmax(spec$base(), 0.01)
  week12 <- 0.6 * base + 0.4 * mean(base) + spec$effect * il2 + rnorm(n, 0, spec$sd)
  week12[sample(n, 4)] <- NA                      # missing week-12 values
  d[[paste0("baseline_", m)]] <- round(base, spec$digits)
  d[[paste0("week12_", m)]] <- round(week12, spec$digits)
}
write.csv(d, file.path(here, "markers.csv"), row.names = FALSE, na = "")

d$arm <- relevel(factor(d$arm), ref = "control")
d$strata <- factor(d$strata)
one <- function(m, with_strata = TRUE) {
  dd <- data.frame(change = d[[paste0("week12_", m)]] - d[[paste0("baseline_", m)]],
                   baseline = d[[paste0("baseline_", m)]], arm = d$arm, strata = d$strata)
  fit <- if (with_strata) lm(change ~ arm + baseline + strata, data = dd) else lm(change ~ arm + baseline, data = dd)
  s <- summary(fit)$coefficients
  ci <- confint(fit)
  em <- as.data.frame(emmeans(fit, ~ arm))
  used <- dd[complete.cases(dd), ]
  list(
    estimate = s["armil2", "Estimate"], se = s["armil2", "Std. Error"], t = s["armil2", "t value"],
    p = s["armil2", "Pr(>|t|)"], df = fit$df.residual,
    lower = ci["armil2", 1], upper = ci["armil2", 2],
    baseline_coef = s["baseline", "Estimate"], baseline_se = s["baseline", "Std. Error"],
    emmean_arm = as.character(em$arm), emmean = as_array(em$emmean), emmean_se = as_array(em$SE),
    emmean_lower = as_array(em$lower.CL), emmean_upper = as_array(em$upper.CL),
    n_used = as_array(as.numeric(table(used$arm)[c("control", "il2")])),
    sigma = summary(fit)$sigma
  )
}
results <- lapply(names(markers), one)
names(results) <- names(markers)
p <- sapply(results, function(r) r$p)
out <- list(
  markers = names(markers), reference = "control", with_strata = results,
  without_strata = list(nk_count = one("nk_count", FALSE)),
  holm = as_array(p.adjust(p, "holm")), bonferroni = as_array(p.adjust(p, "bonferroni")),
  hochberg = as_array(p.adjust(p, "hochberg")), BH = as_array(p.adjust(p, "BH")),
  versions = list(R = R.version.string, emmeans = as.character(packageVersion("emmeans")))
)
write_json(out, file.path(here, "reference.json"))
