# Reference values for cmvtrial.analysis.survival, computed by R's survival package.
#
# Produce them (from the repository root) with:
#     Rscript tests/reference/survival/make_reference.R
# R 4.2.2, survival 3.5-3 (Debian bookworm: apt-get install r-base-core r-cran-survival).
# The script writes the four datasets as CSV (time, event 0/1, arm, strata, x) and every statistic
# as reference.json next to this file. Nothing here is needed to run the tests; it only makes
# the fixture they compare against.
#
# Datasets: R's lung, veteran and ovarian (columns renamed, event recoded 0/1) and a synthetic
# two-arm trial shaped like ours: 100 subjects 1:1, strata SLE/other, clearance of CMV viremia
# seen only at weekly visits (many tied times), censoring at the last assessment.

suppressPackageStartupMessages(library(survival))
here <- "tests/reference/survival"
source("tests/reference/json_writer.R")

datasets <- list(
  lung = with(subset(lung, !is.na(ph.ecog)), data.frame(
    time = time, event = status - 1L, arm = ifelse(sex == 1, "male", "female"),
    strata = ifelse(ph.ecog >= 2, "ecog2+", paste0("ecog", ph.ecog)), x = age)),
  veteran = with(veteran, data.frame(
    time = time, event = status, arm = ifelse(trt == 1, "standard", "test"),
    strata = as.character(celltype), x = karno)),
  ovarian = with(ovarian, data.frame(
    time = futime, event = fustat, arm = ifelse(rx == 1, "A", "B"),
    strata = paste0("resid", resid.ds), x = age))
)

set.seed(20240611)
n <- 100
arm <- rep(c("il2", "control"), each = n / 2)
strata <- sample(c("SLE", "other"), n, replace = TRUE, prob = c(0.7, 0.3))
rate <- ifelse(arm == "il2", 1 / 14, 1 / 28) * ifelse(strata == "SLE", 1, 0.75)
clearance <- 7 * ceiling(rexp(n, rate) / 7)        # seen at the first weekly visit after it
last_visit <- 7 * sample(2:16, n, replace = TRUE)   # last CMV-DNA assessment
datasets$trial <- data.frame(
  time = pmin(clearance, last_visit, 84), event = as.integer(clearance <= pmin(last_visit, 84)),
  arm = arm, strata = strata, x = round(rnorm(n, 45, 12)))

settings <- list(
  lung = list(reference = "male", times = c(0, 90, 180, 365, 730, 2000), tau = 730),
  veteran = list(reference = "standard", times = c(30, 90, 180, 1000), tau = 180),
  ovarian = list(reference = "A", times = c(180, 365, 730, 1200), tau = 1000),
  trial = list(reference = "control", times = c(7, 14, 28, 56, 84), tau = 84)
)

km_one <- function(d, conf.type, times, tau) {
  fit <- survfit(Surv(time, event) ~ 1, data = d, conf.type = conf.type)
  tab <- survival:::survmean(fit, rmean = tau)$matrix
  s <- summary(fit, times = times)
  list(
    n = nrow(d), events = sum(d$event),
    median = unname(tab["median"]), lcl = unname(tab["0.95LCL"]), ucl = unname(tab["0.95UCL"]),
    rmean = unname(tab["rmean"]), se_rmean = unname(tab["se(rmean)"]),
    curve = list(time = as_array(fit$time), n_risk = as_array(fit$n.risk),
                 n_event = as_array(fit$n.event), n_censor = as_array(fit$n.censor),
                 surv = as_array(fit$surv), std_err = as_array(fit$std.err),
                 lower = as_array(fit$lower), upper = as_array(fit$upper)),
    at = list(time = as_array(s$time), n_risk = as_array(s$n.risk), n_event = as_array(s$n.event),
              surv = as_array(s$surv), std_err = as_array(s$std.err),
              lower = as_array(s$lower), upper = as_array(s$upper))
  )
}

logrank <- function(formula, d) {
  sd <- survdiff(formula, data = d)
  groups <- sub("^arm=", "", names(sd$n))
  list(chisq = sd$chisq, p = pchisq(sd$chisq, length(sd$n) - 1, lower.tail = FALSE),
       groups = groups, observed = as_array(if (is.matrix(sd$obs)) rowSums(sd$obs) else sd$obs),
       expected = as_array(if (is.matrix(sd$exp)) rowSums(sd$exp) else sd$exp))
}

test <- function(chisq, df) list(chisq = unname(chisq), df = df, p = pchisq(unname(chisq), df, lower.tail = FALSE))

cox <- function(formula, d, ties) {
  fit <- coxph(formula, data = d, ties = ties)
  s <- summary(fit)
  zph <- cox.zph(fit, transform = "km")
  list(
    coef = as_array(coef(fit)), se = as_array(sqrt(diag(vcov(fit)))),
    hr = as_array(exp(coef(fit))),
    hr_lower = as_array(s$conf.int[, "lower .95"]), hr_upper = as_array(s$conf.int[, "upper .95"]),
    z = as_array(s$coefficients[, "z"]), p = as_array(s$coefficients[, "Pr(>|z|)"]),
    loglik = as_array(fit$loglik),
    # From the fit, not from summary(): summary.coxph rounds the Wald statistic to 2 decimals.
    wald = test(fit$wald.test, length(coef(fit))),
    lr = test(2 * diff(fit$loglik), length(coef(fit))),
    score = test(fit$score, length(coef(fit))),
    zph = list(chisq = as_array(zph$table[, "chisq"]), df = as_array(zph$table[, "df"]),
               p = as_array(zph$table[, "p"]), rows = rownames(zph$table))
  )
}

out <- list()
for (name in names(datasets)) {
  d <- datasets[[name]]
  cfg <- settings[[name]]
  write.csv(d, file.path(here, paste0(name, ".csv")), row.names = FALSE)
  d$arm <- relevel(factor(d$arm), ref = cfg$reference)
  arms <- levels(d$arm)
  km <- list()
  for (ct in c("log", "log-log", "plain")) {
    km[[ct]] <- setNames(lapply(arms, function(a) km_one(d[d$arm == a, ], ct, cfg$times, cfg$tau)), arms)
  }
  # RMST difference and ratio (own formula, as in survRM2): the arms are independent, so
  # Var(diff) = se1^2 + se0^2 and Var(log ratio) = se1^2/r1^2 + se0^2/r0^2 (delta method).
  r1 <- km$log[[arms[2]]]$rmean; s1 <- km$log[[arms[2]]]$se_rmean
  r0 <- km$log[[arms[1]]]$rmean; s0 <- km$log[[arms[1]]]$se_rmean
  z <- qnorm(0.975)
  diff_se <- sqrt(s1^2 + s0^2)
  lr_se <- sqrt(s1^2 / r1^2 + s0^2 / r0^2)
  rmst <- list(
    tau = cfg$tau, difference = r1 - r0, difference_se = diff_se,
    difference_lower = r1 - r0 - z * diff_se, difference_upper = r1 - r0 + z * diff_se,
    difference_p = 2 * pnorm(-abs((r1 - r0) / diff_se)),
    ratio = r1 / r0, ratio_lower = exp(log(r1 / r0) - z * lr_se), ratio_upper = exp(log(r1 / r0) + z * lr_se),
    ratio_p = 2 * pnorm(-abs(log(r1 / r0) / lr_se))
  )
  out[[name]] <- list(
    reference = cfg$reference, arms = arms, times = as_array(cfg$times), tau = cfg$tau,
    km = km, rmst = rmst,
    logrank = logrank(Surv(time, event) ~ arm, d),
    logrank_stratified = logrank(Surv(time, event) ~ arm + strata(strata), d),
    cox = list(
      efron = cox(Surv(time, event) ~ arm, d, "efron"),
      breslow = cox(Surv(time, event) ~ arm, d, "breslow"),
      efron_stratified = cox(Surv(time, event) ~ arm + strata(strata), d, "efron"),
      breslow_stratified = cox(Surv(time, event) ~ arm + strata(strata), d, "breslow"),
      efron_covariate = cox(Surv(time, event) ~ arm + x, d, "efron"),
      breslow_covariate_stratified = cox(Surv(time, event) ~ arm + x + strata(strata), d, "breslow")
    )
  )
}
out$versions <- list(R = R.version.string, survival = as.character(packageVersion("survival")))
write_json(out, file.path(here, "reference.json"))
