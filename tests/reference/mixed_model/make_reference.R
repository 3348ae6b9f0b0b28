# Reference values for cmvtrial.analysis.mixed_model, computed by R's nlme package.
#
# Produce them (from the repository root) with:
#     Rscript tests/reference/mixed_model/make_reference.R
# R 4.2.2, nlme 3.1-162 (Debian bookworm: apt-get install r-base-core r-cran-nlme).
# Writes the datasets as CSV and the fits as reference.json next to this file; the tests only read
# them.
#
# Model (the SAP's decline of CMV titers): lme(value ~ day * arm, random = ~ day | subject,
# method = "REML") with arm's reference level set by relevel(). Datasets: nlme's Orthodont
# (distance ~ age * Sex, the classic random intercept and slope example) and a synthetic trial
# shaped like ours: 40 subjects 1:1, weekly log10 CMV-DNA with visit-day jitter and early stops.

suppressPackageStartupMessages(library(nlme))
here <- "tests/reference/mixed_model"
source("tests/reference/json_writer.R")

set.seed(20240612)
n <- 40
subjects <- sprintf("S%02d", 1:n)
arms <- rep(c("il2", "control"), each = n / 2)
rows <- list()
for (i in 1:n) {
  visits <- 0:12
  last <- sample(4:12, 1)                       # treatment stops at CMV negativity or dropout
  days <- visits[visits <= last] * 7 + c(0, sample(-2:2, sum(visits <= last) - 1, replace = TRUE))
  intercept <- rnorm(1, 4.2, 0.45)
  slope <- rnorm(1, if (arms[i] == "il2") -0.032 else -0.021, 0.008)
  value <- intercept + slope * days + rnorm(length(days), 0, 0.22)
  rows[[i]] <- data.frame(subject = subjects[i], arm = arms[i], day = days, value = round(value, 4))
}
datasets <- list(
  trial = do.call(rbind, rows),
  orthodont = with(as.data.frame(Orthodont), data.frame(
    subject = as.character(Subject), arm = as.character(Sex), day = age, value = distance))
)
references <- list(trial = "control", orthodont = "Male")

visit_means <- function(d) {
  d$visit <- round(d$day / 7)
  keys <- unique(d[order(d$arm, d$visit), c("arm", "visit")])
  out <- lapply(seq_len(nrow(keys)), function(k) {
    v <- d$value[d$arm == keys$arm[k] & d$visit == keys$visit[k]]
    ci <- if (length(v) > 1) t.test(v)$conf.int else c(NA, NA)
    c(mean = mean(v), sd = if (length(v) > 1) sd(v) else NA, n = length(v), lower = ci[1], upper = ci[2])
  })
  m <- do.call(rbind, out)
  list(arm = keys$arm, visit = as_array(keys$visit), mean = as_array(m[, "mean"]), sd = as_array(m[, "sd"]),
       n = as_array(m[, "n"]), lower = as_array(m[, "lower"]), upper = as_array(m[, "upper"]))
}

summarise <- function(fit) {
  tt <- summary(fit)$tTable
  ci <- intervals(fit, which = "fixed")$fixed
  G <- as.matrix(fit$modelStruct$reStruct[[1]]) * fit$sigma^2  # reStruct holds G / sigma^2
  list(
    terms = rownames(tt),
    coef = as_array(tt[, "Value"]), se = as_array(tt[, "Std.Error"]), df = as_array(tt[, "DF"]),
    t = as_array(tt[, "t-value"]), p = as_array(tt[, "p-value"]),
    lower = as_array(ci[, "lower"]), upper = as_array(ci[, "upper"]),
    sd_intercept = sqrt(G[1, 1]), sd_slope = sqrt(G[2, 2]), corr = G[1, 2] / sqrt(G[1, 1] * G[2, 2]),
    sigma = fit$sigma, loglik = as.numeric(logLik(fit))
  )
}

out <- list()
for (name in names(datasets)) {
  d <- datasets[[name]]
  write.csv(d, file.path(here, paste0(name, ".csv")), row.names = FALSE)
  d$arm <- relevel(factor(d$arm), ref = references[[name]])
  # nlme's defaults stop about 1e-6 (fixed effects) and 4e-6 (SEs) short of the REML maximum on
  # the synthetic data; the tight fit is the maximum itself and is what the tests compare with at
  # 1e-6. The default fit is kept to show how close the default gets.
  default <- lme(value ~ day * arm, random = ~ day | subject, data = d, method = "REML")
  tight <- lme(value ~ day * arm, random = ~ day | subject, data = d, method = "REML",
               control = lmeControl(msTol = 1e-12, tolerance = 1e-12, msMaxIter = 1000,
                                    maxIter = 1000, niterEM = 100))
  out[[name]] <- list(
    reference = references[[name]], n_obs = nrow(d), n_groups = length(unique(d$subject)),
    default = summarise(default), tight = summarise(tight),
    visit_means = if (name == "trial") visit_means(d) else NULL
  )
}
out$versions <- list(R = R.version.string, nlme = as.character(packageVersion("nlme")))
write_json(out, file.path(here, "reference.json"))
