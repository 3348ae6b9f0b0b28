# A minimal JSON writer for the reference fixtures: numbers with 17 significant digits so that
# Python reads back exactly the double R computed (jsonlite rounds to 15 digits by default).
# NA becomes null, +/-Inf become the strings "Inf"/"-Inf". A numeric of length 1 is a scalar;
# wrap a vector in as_array() to keep it an array even when it has one element.
as_array <- function(x) structure(as.numeric(x), class = "json_array")

to_json <- function(x, indent = "") {
  inner <- paste0(indent, "  ")
  num <- function(v) {
    out <- sprintf("%.17g", v)
    out[is.na(v)] <- "null"
    out[is.infinite(v) & v > 0] <- "\"Inf\""
    out[is.infinite(v) & v < 0] <- "\"-Inf\""
    out
  }
  if (is.null(x)) return("null")
  if (inherits(x, "json_array")) return(paste0("[", paste(num(unclass(x)), collapse = ", "), "]"))
  if (is.list(x)) {
    if (!is.null(names(x))) {
      items <- vapply(seq_along(x), function(i) {
        paste0(inner, "\"", names(x)[i], "\": ", to_json(x[[i]], inner))
      }, "")
      return(paste0("{\n", paste(items, collapse = ",\n"), "\n", indent, "}"))
    }
    return(paste0("[", paste(vapply(x, to_json, "", indent = inner), collapse = ", "), "]"))
  }
  if (is.character(x) || is.factor(x)) {
    x <- as.character(x)
    quoted <- paste0("\"", x, "\"")
    return(if (length(x) == 1) quoted else paste0("[", paste(quoted, collapse = ", "), "]"))
  }
  if (is.logical(x) && length(x) == 1 && !is.na(x)) return(if (x) "true" else "false")
  if (length(x) == 1) return(num(as.numeric(x)))
  paste0("[", paste(num(as.numeric(x)), collapse = ", "), "]")
}

write_json <- function(x, path) {
  writeLines(to_json(x), path)
}
