# Reference values for cmvtrial.analysis.report_results, computed by R on the exported datasets.
#
# Produce them (from the repository root) with:
#     .venv/bin/python tests/reference/report/make_datasets.py   # ADSL/ADTTE/ADLB of the fixture trial
#     Rscript tests/reference/report/make_reference.R
# R 4.2.2, survival 3.5-3, nlme 3.1-162. The trial is tests/unit/report_support.py's (protocol
# sle-cmv-il2, 60 subjects, 3 sites = randomization strata); the analyses are the report's, for
# the intention-to-treat population, written the way `cmvtrial export adam`'s rerun.R writes them.

suppressPackageStartupMessages({library(survival); library(nlme)})
here <- "tests/reference/report"
source("tests/reference/json_writer.R")

adsl <- read.csv(file.path(here, "ADSL.csv"))
adtte <- read.csv(file.path(here, "ADTTE.csv"))
adlb <- read.csv(file.path(here, "ADLB.csv"))
reference <- "gcv"
times <- c(14, 28, 56, 84)   # the protocol's analysis.survival_at_days
tau <- 84                    # the protocol's analysis.rmst_tau_days
families <- list(
  nk_change = c("NKCE", "NKCELY"),
  immune_responses = c("IGG", "IGA", "IGM", "CD3", "CD4", "CD8", "CD19", "TREGCD4", "TH1CD4", "TH2CD4", "TH17CD4"),
  complement_levels = c("C3", "C4")
)

# Duration of viremia -----------------------------------------------------------------------------
d <- subset(adtte, ITTFL == "Y")
d$arm <- relevel(factor(d$TRT01P), ref = reference)
km <- list()
for (a in levels(d$arm)) {
  fit <- survfit(Surv(AVAL, EVENT) ~ 1, data = d[d$arm == a, ], conf.type = "log")
  tab <- survival:::survmean(fit, rmean = tau)$matrix
  s <- summary(fit, times = times, extend = TRUE)
  km[[a]] <- list(n = sum(d$arm == a), events = sum(d$EVENT[d$arm == a]),
                  median = unname(tab["median"]), lcl = unname(tab["0.95LCL"]), ucl = unname(tab["0.95UCL"]),
                  rmean = unname(tab["rmean"]), se_rmean = unname(tab["se(rmean)"]),
                  at_surv = as_array(s$surv), at_n_risk = as_array(s$n.risk),
                  at_lower = as_array(s$lower), at_upper = as_array(s$upper))
}
sd <- survdiff(Surv(AVAL, EVENT) ~ arm + strata(STRATUM), data = d)
cx <- coxph(Surv(AVAL, EVENT) ~ arm + strata(STRATUM), data = d, ties = "efron")
cs <- summary(cx)
zph <- cox.zph(cx, transform = "km")
r1 <- km[[2]]$rmean; s1 <- km[[2]]$se_rmean; r0 <- km[[1]]$rmean; s0 <- km[[1]]$se_rmean
tte <- list(
  km = km,
  logrank = list(chisq = sd$chisq, p = pchisq(sd$chisq, 1, lower.tail = FALSE)),
  cox = list(coef = unname(coef(cx)), se = unname(sqrt(diag(vcov(cx)))), hr = unname(exp(coef(cx))),
             lower = unname(cs$conf.int[, "lower .95"]), upper = unname(cs$conf.int[, "upper .95"]),
             p = unname(cs$coefficients[, "Pr(>|z|)"]),
             zph_chisq = unname(zph$table["GLOBAL", "chisq"]), zph_p = unname(zph$table["GLOBAL", "p"])),
  rmst = list(difference = r1 - r0, difference_se = sqrt(s1^2 + s0^2),
              difference_p = 2 * pnorm(-abs((r1 - r0) / sqrt(s1^2 + s0^2))))
)

# Decline of log10 CMV-DNA: baseline to the end of treatment ----------------------------------------
cmv <- merge(subset(adlb, PARAMCD == "CMVLOG10" & ITTFL == "Y"), adsl[, c("USUBJID", "EOTDT", "RANDDT")], by = "USUBJID")
eot <- as.numeric(as.Date(cmv$EOTDT) - as.Date(cmv$RANDDT))
cmv <- cmv[cmv$ABLFL %in% "Y" | (cmv$ADY > 0 & (is.na(eot) | cmv$ADY <= eot)), ]
cmv$arm <- relevel(factor(cmv$TRT01P), ref = reference)
lmm <- lme(AVAL ~ ADY * arm, random = ~ ADY | USUBJID, data = cmv, method = "REML",
           control = lmeControl(msTol = 1e-12, tolerance = 1e-12, msMaxIter = 1000, maxIter = 1000, niterEM = 100))
tt <- summary(lmm)$tTable
ci <- intervals(lmm, which = "fixed")$fixed
decline <- list(n_obs = nrow(cmv), coef = as_array(tt[, "Value"]), se = as_array(tt[, "Std.Error"]),
                df = as_array(tt[, "DF"]), p = as_array(tt[, "p-value"]),
                lower = as_array(ci[, "lower"]), upper = as_array(ci[, "upper"]))

# Change from baseline to week 12: ANCOVA per marker, Holm across the family, Wilcoxon ------------
change <- list()
for (family in names(families)) {
  rows <- list()
  for (code in families[[family]]) {
    values <- subset(adlb, PARAMCD == code & ITTFL == "Y")
    base <- values[values$ABLFL %in% "Y", c("USUBJID", "AVAL")]
    names(base)[2] <- "BASE"
    w12 <- values[values$ANL01FL %in% "Y" & values$AVISITCD %in% "W12", c("USUBJID", "CHG")]
    frame <- merge(merge(subset(adsl, ITTFL == "Y")[, c("USUBJID", "TRT01P", "STRATUM")], base, all.x = TRUE), w12, all.x = TRUE)
    frame$arm <- relevel(factor(frame$TRT01P), ref = reference)
    fit <- lm(CHG ~ arm + BASE + STRATUM, data = frame)
    co <- summary(fit)$coefficients["armil2_gcv", ]
    ci <- confint(fit)["armil2_gcv", ]
    w <- wilcox.test(frame$CHG[frame$arm == "il2_gcv"], frame$CHG[frame$arm == "gcv"], conf.int = TRUE)
    rows[[code]] <- list(estimate = unname(co["Estimate"]), se = unname(co["Std. Error"]), p = unname(co["Pr(>|t|)"]),
                         lower = unname(ci[1]), upper = unname(ci[2]), n_used = sum(!is.na(frame$CHG) & !is.na(frame$BASE)),
                         wilcoxon_p = w$p.value, wilcoxon_estimate = unname(w$estimate))
  }
  adjusted <- p.adjust(vapply(rows, function(r) r$p, 0), method = "holm")
  for (code in names(rows)) rows[[code]]$p_adjusted <- unname(adjusted[code])
  change[[family]] <- rows
}

# Baseline characteristics (age, ITT, by arm) ---------------------------------------------------------
ages <- lapply(split(adsl$AGE, adsl$TRT01P), function(x) list(mean = mean(x), sd = sd(x), q1 = unname(quantile(x, 0.25)),
                                                               median = median(x), q3 = unname(quantile(x, 0.75))))

out <- list(tte = tte, decline = decline, change = change, age = ages,
            versions = list(R = R.version.string, survival = as.character(packageVersion("survival")),
                            nlme = as.character(packageVersion("nlme"))))
writeLines(to_json(out), file.path(here, "reference.json"))
