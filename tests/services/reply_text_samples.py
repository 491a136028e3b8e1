"""A small labelled sample of reply bodies (written for postroom's tests, not copied from any
mailbox): each entry is (name, plain-text body as a client sends it, the new text a person
would call the reply). It covers the quoting styles of Gmail, Apple Mail, Outlook (desktop and
web, several languages), Thunderbird and phones, signatures, and mail that quotes nothing."""

from __future__ import annotations

SAMPLES: list[tuple[str, str, str]] = [
    (
        "gmail_en",
        "Sounds good, see you at 3.\n\n"
        "On Mon, Mar 4, 2024 at 10:12 AM Ana Lima <ana@example.com> wrote:\n"
        "> Can we meet tomorrow?\n>\n> Ana\n",
        "Sounds good, see you at 3.",
    ),
    (
        "gmail_en_wrapped_header",
        "Yes, the invoice is attached.\n\n"
        "On Tue, Apr 16, 2024 at 9:03 PM Bartholomew Longname-Hyphenated <\n"
        "bartholomew.longname@example.org> wrote:\n\n"
        "> Could you send the invoice again?\n",
        "Yes, the invoice is attached.",
    ),
    (
        "apple_mail_en",
        "Thanks Bo, that works.\n\n"
        "> On 5 Jan 2024, at 10:00, Bo Berg <bo@example.com> wrote:\n>\n"
        "> Does Friday work for you?\n",
        "Thanks Bo, that works.",
    ),
    (
        "apple_mail_iphone_signature",
        "Will do.\n\nSent from my iPhone\n\n"
        "> On Jan 5, 2024, at 10:00 AM, Bo Berg <bo@example.com> wrote:\n>\n> Call me?\n",
        "Will do.",
    ),
    (
        "thunderbird_en",
        "I agree with the plan.\n\n"
        "On 06/05/2024 14:22, Carla Diaz wrote:\n"
        "> Here is the plan:\n> 1. ship\n> 2. rest\n",
        "I agree with the plan.",
    ),
    (
        "signature_dashes",
        "The build is green again.\n\n-- \nDan Evans\nRelease engineering\n",
        "The build is green again.",
    ),
    (
        "signature_then_quote",
        "Merged, thanks!\n\n-- \nEve\n\n"
        "On Wed, 7 Feb 2024 at 08:00, Finn Gray <finn@example.com> wrote:\n> PR is ready.\n",
        "Merged, thanks!",
    ),
    (
        "outlook_original_message",
        "Please find the report below.\n\nRegards\nGreta\n\n"
        "-----Original Message-----\n"
        "From: Hugo Ito <hugo@example.com>\nSent: Monday, March 4, 2024 9:15 AM\n"
        "To: Greta Holm <greta@example.com>\nSubject: Report\n\nWhere is the report?\n",
        "Please find the report below.\n\nRegards\nGreta",
    ),
    (
        "outlook_from_sent_block",
        "Approved.\n\n"
        "From: Ivan Jones <ivan@example.com>\nSent: Thursday, May 2, 2024 4:40 PM\n"
        "To: Kim Lee <kim@example.com>\nCc: Team <team@example.com>\n"
        "Subject: Budget request\n\nCan you approve the budget?\n",
        "Approved.",
    ),
    (
        "outlook_underscore_separator",
        "On my way.\n\n________________________________\n"
        "From: Lena Moor <lena@example.com>\nSent: Friday, June 7, 2024 08:01\n"
        "To: Max Nord\nSubject: Where are you?\n\nWhere are you?\n",
        "On my way.",
    ),
    (
        "outlook_bold_headers",
        "Confirmed for Tuesday.\n\n"
        "*From:* Nina Ott <nina@example.com>\n*Sent:* Monday, July 1, 2024 11:00 AM\n"
        "*To:* Olaf Pik <olaf@example.com>\n*Subject:* Tuesday?\n\nIs Tuesday fine?\n",
        "Confirmed for Tuesday.",
    ),
    (
        "outlook_de",
        "Danke, passt so.\n\nViele Grüße\nPaul\n\n"
        "Von: Quirin Roth <quirin@example.de>\nGesendet: Montag, 4. März 2024 10:00\n"
        "An: Paul Sand <paul@example.de>\nBetreff: Termin\n\nPasst Montag?\n",
        "Danke, passt so.\n\nViele Grüße\nPaul",
    ),
    (
        "gmail_de",
        "Ja, gerne.\n\n"
        "Am Mo., 4. März 2024 um 10:12 Uhr schrieb Rita Stein <rita@example.de>:\n"
        "> Kommst du mit?\n",
        "Ja, gerne.",
    ),
    (
        "thunderbird_de",
        "Erledigt.\n\nAm 04.03.2024 um 10:12 schrieb Rita Stein:\n> Bitte erledigen.\n",
        "Erledigt.",
    ),
    (
        "gmail_fr",
        "Merci, c'est noté.\n\n"
        "Le lun. 4 mars 2024 à 10:12, Sophie Tardy <sophie@example.fr> a écrit :\n"
        "> Réunion demain ?\n",
        "Merci, c'est noté.",
    ),
    (
        "outlook_fr",
        "D'accord.\n\n"
        "De : Sophie Tardy <sophie@example.fr>\nEnvoyé : lundi 4 mars 2024 10:12\n"
        "À : Théo Ullman <theo@example.fr>\nObjet : Réunion\n\nRéunion demain ?\n",
        "D'accord.",
    ),
    (
        "gmail_es",
        "Perfecto, nos vemos.\n\n"
        "El lun, 4 mar 2024 a las 10:12, Uxue Vidal (<uxue@example.es>) escribió:\n"
        "> ¿Quedamos mañana?\n",
        "Perfecto, nos vemos.",
    ),
    (
        "outlook_es",
        "Recibido.\n\n"
        "De: Uxue Vidal <uxue@example.es>\nEnviado: lunes, 4 de marzo de 2024 10:12\n"
        "Para: Víctor Wolf <victor@example.es>\nAsunto: Factura\n\nAdjunto la factura.\n",
        "Recibido.",
    ),
    (
        "gmail_it",
        "Va bene.\n\n"
        "Il giorno lun 4 mar 2024 alle ore 10:12 Walter Xeri <walter@example.it> ha scritto:\n"
        "> Ci sei domani?\n",
        "Va bene.",
    ),
    (
        "gmail_pt",
        "Combinado.\n\n"
        "Em seg., 4 de mar. de 2024 às 10:12, Yara Zanin <yara@example.br> escreveu:\n"
        "> Podemos falar amanhã?\n",
        "Combinado.",
    ),
    (
        "gmail_nl",
        "Prima, tot dan.\n\n"
        "Op ma 4 mrt 2024 om 10:12 schreef Anouk Bos <anouk@example.nl>:\n> Morgen?\n",
        "Prima, tot dan.",
    ),
    (
        "gmail_sv",
        "Låter bra.\n\n"
        "Den mån 4 mars 2024 kl 10:12 skrev Bengt Ek <bengt@example.se>:\n> Ses i morgon?\n",
        "Låter bra.",
    ),
    (
        "gmail_pl",
        "Jasne.\n\n"
        "W dniu pon., 4.03.2024 o 10:12 Celina Duda <celina@example.pl> napisała:\n"
        "> Jutro?\n",
        "Jasne.",
    ),
    (
        "gmail_ja",
        "了解しました。\n\n"
        "2024年3月4日(月) 10:12 山田太郎 <taro@example.jp>:\n> 明日はどうですか\uff1f\n",
        "了解しました。",
    ),
    (
        "original_message_de",
        "Siehe unten.\n\n-----Ursprüngliche Nachricht-----\n"
        "Von: Eva Fink\nGesendet: Montag\nAn: Georg\nBetreff: Frage\n\nFrage?\n",
        "Siehe unten.",
    ),
    (
        "quoted_lines_without_header",
        "I fixed it in the last commit.\n\n> the tests fail on main\n> since yesterday\n",
        "I fixed it in the last commit.",
    ),
    (
        "no_quote_at_all",
        "Hello team,\n\nthe release is out. Thanks, everyone, for the work!\n\nBest,\nHanna\n",
        "Hello team,\n\nthe release is out. Thanks, everyone, for the work!\n\nBest,\nHanna",
    ),
    (
        "thanks_in_the_middle",
        "Thanks, that fixed it. One more question: does it run on Windows?\n\n"
        "On Fri, 8 Mar 2024 at 12:00, Ida Jung <ida@example.com> wrote:\n> Try again now.\n",
        "Thanks, that fixed it. One more question: does it run on Windows?",
    ),
    (
        "inline_answers",
        "On Fri, 8 Mar 2024 at 12:00, Jon Kay <jon@example.com> wrote:\n"
        "> Can you do Monday?\n\nYes.\n\n> And Tuesday?\n\nNo, sorry.\n",
        "Yes.\n\nNo, sorry.",
    ),
    (
        "list_with_hyphens",
        "Here is what changed:\n- the parser\n- the tests\n\n"
        "On Fri, 8 Mar 2024 at 12:00, Jon Kay <jon@example.com> wrote:\n> What changed?\n",
        "Here is what changed:\n- the parser\n- the tests",
    ),
    (
        "mobile_outlook",
        "OK\n\nGet Outlook for Android\n"
        "________________________________\nFrom: Kai Lund <kai@example.com>\n"
        "Sent: Monday, March 4, 2024 10:12:00 AM\nTo: Lea Marx\nSubject: Lunch\n\nLunch?\n",
        "OK",
    ),
    (
        "crlf_gmail",
        "Done.\r\n\r\nOn Mon, Mar 4, 2024 at 10:12 AM Ana <ana@example.com> wrote:\r\n> Do it\r\n",
        "Done.",
    ),
    (
        "forwarded",
        "FYI, see below.\n\n---------- Forwarded message ---------\n"
        "From: Mia Nagy <mia@example.com>\nDate: Mon, Mar 4, 2024 at 10:12 AM\n"
        "Subject: Outage\nTo: <ops@example.com>\n\nThe site is down.\n",
        "FYI, see below.",
    ),
    (
        "signature_double_dash_no_space",
        "Shipped today.\n\n--\nNoah\nSent with care\n",
        "Shipped today.",
    ),
]
