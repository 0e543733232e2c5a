"""An invoice or credit note as a PDF page that looks like one: issuer and addressee, number and dates, a
table of lines with right-aligned amounts, totals, notes, page numbers. fpdf2 with the PDF core font
Helvetica, so nothing is downloaded or embedded; core fonts speak latin-1 only, so other characters are
transliterated (`latin1`). The output depends on the stored document only: the same document, the same bytes.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from fpdf import FPDF

# typographic characters that are not latin-1 but have a plain equivalent
_PLAIN = {
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2018": "'", "\u2019": "'", "\u201a": ",",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2026": "...", "\u20ac": "EUR", "\u2022": "*",
    "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u0141": "L", "\u0142": "l", "\u0110": "D", "\u0111": "d",
    "\u0131": "i", "\u0152": "OE", "\u0153": "oe",
}  # fmt: skip

WIDTHS = (95.0, 22.0, 28.0, 30.0)  # description, quantity, unit price, amount (mm; A4 less 17.5 mm margins)
ROW = 6.0


def latin1(text: str) -> str:
    """`text` in latin-1: kept where it can be, else transliterated (Łódź -> Lodz, Ελλάδα -> ?)."""
    out = []
    for char in str(text):
        if ord(char) < 256:
            out.append(char)
            continue
        plain = _PLAIN.get(char)
        if plain is None:
            decomposed = unicodedata.normalize("NFKD", char)
            plain = "".join(c for c in decomposed if ord(c) < 256 and not unicodedata.combining(c)) or "?"
        out.append(plain)
    return "".join(out)


def money(amount: str | Decimal) -> str:
    """1234.5 -> 1,234.50 (two decimals, thousands separated)."""
    return f"{Decimal(amount):,.2f}"


def quantity(value: str | Decimal) -> str:
    number = Decimal(value)
    if number == number.to_integral_value():
        return f"{int(number):,}"
    return money(number)


def unit_price(line: dict[str, Any]) -> str:
    """Percent lines show their rate; money lines their price (more decimals only when it has them)."""
    price = Decimal(line["unit_price"])
    if line["kind"] in ("markup", "discount", "tax"):
        return f"{(price * 100).normalize():f} %"
    if price == price.quantize(Decimal("0.01")):
        return money(price)
    return f"{price.normalize():f}"


class _Pdf(FPDF):
    title_text = ""

    def footer(self) -> None:
        self.set_y(-14)
        self.set_font("Helvetica", "", 8)
        self.set_text_color(110)
        self.cell(0, 5, latin1(self.title_text), align="L")
        self.set_x(self.l_margin)
        self.cell(0, 5, f"Page {self.page_no()} of {{nb}}", align="R")


def render_pdf(doc: dict[str, Any]) -> bytes:
    """The PDF of a stored invoice or credit note document."""
    credit = doc["kind"] == "credit_note"
    heading = "CREDIT NOTE" if credit else "INVOICE"
    pdf = _Pdf(format="A4", unit="mm")
    pdf.title_text = f"{'Credit note' if credit else 'Invoice'} {doc['number']}"
    issued = date.fromisoformat(doc["issued_on"])
    pdf.set_creation_date(datetime(issued.year, issued.month, issued.day, tzinfo=UTC))
    pdf.set_title(latin1(pdf.title_text))
    pdf.set_author(latin1(doc["issuer"]["name"] or "hubfleet"))
    pdf.set_creator("hubfleet")
    pdf.set_producer("hubfleet")
    pdf.set_margins(17.5, 17.5, 17.5)
    pdf.set_auto_page_break(True, margin=20)
    pdf.alias_nb_pages()
    pdf.add_page()
    _head(pdf, doc, heading)
    _table(pdf, doc)
    _totals(pdf, doc)
    _notes(pdf, doc)
    return bytes(pdf.output())


def _head(pdf: FPDF, doc: dict[str, Any], heading: str) -> None:
    issuer, left = doc["issuer"], pdf.l_margin
    top = pdf.get_y()
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(100, 7, latin1(issuer["name"] or "(issuer not set: fleet.yaml costs.invoicing.issuer)"))
    pdf.ln(7)
    pdf.set_font("Helvetica", "", 9)
    for text in [
        *issuer["address"],
        issuer["email"],
        f"Tax ID {issuer['tax_id']}" if issuer["tax_id"] else "",
    ]:
        if text:
            pdf.cell(100, 4.5, latin1(text))
            pdf.ln(4.5)
    below_issuer = pdf.get_y()
    pdf.set_xy(left + 100, top)
    pdf.set_font("Helvetica", "B", 20)
    pdf.cell(75, 9, heading, align="R")
    facts = [("Number", doc["number"]), ("Issued", doc["issued_on"]), ("Due", doc["due_on"])]
    facts += [("Period", f"{doc['period']['first']} to {doc['period']['last']}")]
    if doc.get("refers_to"):
        facts.append(("For invoice", doc["refers_to"]))
    if doc.get("purchase_order"):
        facts.append(("Purchase order", doc["purchase_order"]))
    y = top + 11
    for label, value in facts:
        pdf.set_xy(left + 100, y)
        pdf.set_font("Helvetica", "", 9)
        pdf.cell(32, 5, label)
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(43, 5, latin1(value), align="R")
        y += 5
    pdf.set_xy(left, max(below_issuer, y) + 8)
    bill = doc["bill_to"]
    pdf.set_font("Helvetica", "", 8)
    pdf.set_text_color(110)
    pdf.cell(0, 4, "BILL TO")
    pdf.ln(5)
    pdf.set_text_color(0)
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(0, 5, latin1(bill["name"]))
    pdf.ln(5)
    pdf.set_font("Helvetica", "", 9)
    for text in [*bill.get("address", []), bill.get("email") or "", bill.get("attention") or ""]:
        if text:
            pdf.cell(0, 4.5, latin1(text))
            pdf.ln(4.5)
    pdf.ln(6)


def _table_header(pdf: FPDF, currency: str) -> None:
    pdf.set_font("Helvetica", "B", 9)
    pdf.set_fill_color(235, 239, 244)
    labels = ("Description", "Quantity", "Unit price", f"Amount ({currency})")
    for width, label, align in zip(WIDTHS, labels, ("L", "R", "R", "R"), strict=True):
        pdf.cell(width, ROW + 1, label, align=align, fill=True)
    pdf.ln(ROW + 1)
    pdf.set_font("Helvetica", "", 9)


def _table(pdf: FPDF, doc: dict[str, Any]) -> None:
    _table_header(pdf, doc["currency"])
    for line in doc["lines"]:
        if line["kind"] == "tax":
            continue  # shown with the totals
        if pdf.will_page_break(ROW):
            pdf.add_page()
            _table_header(pdf, doc["currency"])
        description = latin1(line["description"])
        while pdf.get_string_width(description) > WIDTHS[0] - 2 and len(description) > 4:
            description = description[:-4] + "..."
        cells = (description, quantity(line["quantity"]), unit_price(line), money(line["amount"]))
        for width, text, align in zip(WIDTHS, cells, ("L", "R", "R", "R"), strict=True):
            pdf.cell(width, ROW, text, align=align)
        pdf.ln(ROW)
        pdf.set_draw_color(225)
        pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + sum(WIDTHS), pdf.get_y())


def _totals(pdf: FPDF, doc: dict[str, Any]) -> None:
    rows = [("Subtotal", doc["subtotal"], False)]
    for line in doc["lines"]:
        if line["kind"] == "tax":
            rows.append((f"{line['description']} of {money(line['quantity'])}", line["amount"], False))
    rows.append(("Total", doc["total"], True))
    if pdf.will_page_break(ROW * (len(rows) + 1)):
        pdf.add_page()
    pdf.ln(2)
    label_width = sum(WIDTHS[:3])
    for label, amount, bold in rows:
        pdf.set_font("Helvetica", "B" if bold else "", 10 if bold else 9)
        pdf.cell(label_width - 5, ROW, latin1(label), align="R")
        pdf.cell(WIDTHS[3] + 5, ROW, f"{money(amount)} {doc['currency']}", align="R")
        pdf.ln(ROW)


def _notes(pdf: FPDF, doc: dict[str, Any]) -> None:
    payment = doc["issuer"].get("payment_details") or []
    if payment and doc["kind"] == "invoice":
        pdf.ln(6)
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(0, 5, "Payment")
        pdf.ln(5)
        pdf.set_font("Helvetica", "", 9)
        for text in [*payment, f"Reference: {doc['number']}"]:
            pdf.cell(0, 4.5, latin1(text))
            pdf.ln(4.5)
    notes = list(doc.get("notes", []))
    if not notes:
        return
    pdf.ln(6)
    pdf.set_font("Helvetica", "B", 9)
    pdf.cell(0, 5, "Notes")
    pdf.ln(5)
    pdf.set_font("Helvetica", "", 8.5)
    width = pdf.w - pdf.l_margin - pdf.r_margin
    for note in notes:
        for text in _wrap(pdf, latin1(f"- {note}"), width):
            pdf.cell(0, 4.2, text)
            pdf.ln(4.2)


def _wrap(pdf: FPDF, text: str, width: float) -> list[str]:
    """`text` in lines no wider than `width`, broken at spaces (fpdf2's multi_cell measures the line again
    for every character: on a hundred invoices that was half of the PDF time). The leading dash and spaces
    are kept; later lines are indented under the text."""
    body = text.lstrip("- ")
    head = text[: len(text) - len(body)]
    indent = " " * (len(head) + 1)
    space = pdf.get_string_width(" ")
    lines, line, used = [], head, pdf.get_string_width(head)
    for word in body.split():
        size = pdf.get_string_width(word)
        if line.strip("- ") and used + space + size > width:
            lines.append(line)
            line, used = indent + word, pdf.get_string_width(indent) + size
        elif line.strip("- "):
            line, used = f"{line} {word}", used + space + size
        else:
            line, used = line + word, used + size
    lines.append(line)
    return lines
