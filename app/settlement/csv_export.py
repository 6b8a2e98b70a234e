"""A statement as CSV, for a partner's finance clerk: a header block, then one row per line."""

import csv
import io

from app.settlement.schemas import StatementRead

COLUMNS = ["line_no", "kind", "late", "points_price", "postings", "quantity", "amount"]


def statement_csv(statement: StatementRead) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["statement", str(statement.id)])
    writer.writerow(["partner", statement.partner_code])
    writer.writerow(["period_start", statement.period_start.isoformat()])
    writer.writerow(["period_end", statement.period_end.isoformat()])
    writer.writerow(["currency", statement.currency])
    writer.writerow(["net_amount", statement.net_amount])
    writer.writerow(["direction", statement.direction])
    writer.writerow([])
    writer.writerow(COLUMNS)
    for line in statement.lines or []:
        row = line.model_dump()
        writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
    return out.getvalue()
