"""What a student is told, and how a student is named: the parts not tied to one command."""

import unicodedata

from tito.grading import student_id


def test_a_name_in_nfd_form_is_the_same_student():
    # macOS often spells file names in NFD ("e" + combining accent); a collected
    # folder named that way must not become a second student.
    nfc = unicodedata.normalize("NFC", "José Núñez")
    nfd = unicodedata.normalize("NFD", "José Núñez")
    assert nfc != nfd
    assert student_id(nfd) == student_id(nfc) == "jose_nunez-652047"  # existing NFC ids are kept


def test_ids_already_in_use_do_not_change():
    assert student_id("alice") == "alice"
    assert student_id(" Bob Smith ") == "bob_smith-d6ceae"
    assert student_id("Zoë O'Brien") == "zoe_o_brien-a2adf1"
    assert student_id(unicodedata.normalize("NFD", "Zoë O'Brien")) == "zoe_o_brien-a2adf1"
